package gateway

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/protocol"
)

// hrrRandom is the ServerHello.random that marks a HelloRetryRequest
// (RFC 8446 §4.1.3).
var hrrRandom = []byte{
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
}

// relay forwards datagrams between one client and the gateway and keeps the
// gateway's answers, so a test can look at the first flight.
type relay struct {
	pc       *net.UDPConn
	mu       sync.Mutex
	fromSrv  [][]byte
	clientAt *net.UDPAddr
}

func newRelay(t *testing.T, server *net.UDPAddr) *relay {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.DialUDP("udp", nil, server)
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{pc: pc}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.clientAt = from
			r.mu.Unlock()
			_, _ = up.Write(buf[:n])
		}
	}()
	go func() {
		buf := make([]byte, 65535)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.fromSrv = append(r.fromSrv, append([]byte(nil), buf[:n]...))
			to := r.clientAt
			r.mu.Unlock()
			_, _ = pc.WriteToUDP(buf[:n], to)
		}
	}()
	t.Cleanup(func() { _ = pc.Close(); _ = up.Close() })
	return r
}

func (r *relay) first() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.fromSrv) == 0 {
		return nil
	}
	return r.fromSrv[0]
}

// TestCookieExchange: the gateway's first answer to a ClientHello is a
// HelloVerifyRequest (DTLS 1.2) or a HelloRetryRequest carrying a cookie
// (DTLS 1.3), so a spoofed source cannot make it send a full flight.
func TestCookieExchange(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("dev", 1)
	k.Legacy = true
	_, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})
	for _, tc := range []struct {
		name    string
		version protocol.Version
	}{{"dtls12", protocol.Version1_2}, {"dtls13", protocol.Version1_3}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRelay(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := (client{id: k.Identity, key: k.Secret, version: tc.version}).dial(ctx, r.pc.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			roundTrip(t, conn, []byte("after cookie"))
			p := r.first()
			if len(p) < recordHeaderLen+handshakeHeaderLen+3 || p[0] != contentTypeHandshake {
				t.Fatalf("first server datagram is not a handshake record: % x", p)
			}
			msgType := p[recordHeaderLen]
			body := p[recordHeaderLen+handshakeHeaderLen:]
			switch tc.version {
			case protocol.Version1_2:
				if msgType != 3 { // hello_verify_request
					t.Fatalf("first server message type %d, want HelloVerifyRequest (3)", msgType)
				}
			case protocol.Version1_3:
				if msgType != 2 || len(body) < 34 || !bytes.Equal(body[2:34], hrrRandom) {
					t.Fatalf("first server message type %d, want a HelloRetryRequest", msgType)
				}
				if !bytes.Contains(body, []byte{0x00, 0x2c}) { // cookie extension type 44
					t.Fatal("HelloRetryRequest without a cookie extension")
				}
			}
		})
	}
}
