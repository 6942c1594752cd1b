package gateway

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// dropRelay forwards datagrams between one client and the gateway and
// drops the gateway's datagrams that drop says to drop.
type dropRelay struct {
	pc, up *net.UDPConn

	mu      sync.Mutex
	client  *net.UDPAddr
	fromDev [][]byte // client datagrams, in order
	toDev   [][]byte // gateway datagrams that passed
	dropped int
}

func newDropRelay(t *testing.T, gw *net.UDPAddr, drop func(r *dropRelay, b []byte) bool) *dropRelay {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.DialUDP("udp", nil, gw)
	if err != nil {
		t.Fatal(err)
	}
	r := &dropRelay{pc: pc, up: up}
	t.Cleanup(func() { _ = pc.Close(); _ = up.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.client = from
			r.fromDev = append(r.fromDev, append([]byte(nil), buf[:n]...))
			r.mu.Unlock()
			_, _ = up.Write(buf[:n])
		}
	}()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			b := append([]byte(nil), buf[:n]...)
			r.mu.Lock()
			if drop(r, b) {
				r.dropped++
				r.mu.Unlock()
				continue
			}
			r.toDev = append(r.toDev, b)
			client := r.client
			r.mu.Unlock()
			_, _ = pc.WriteToUDP(b, client)
		}
	}()
	return r
}

func (r *dropRelay) addr() *net.UDPAddr { return r.pc.LocalAddr().(*net.UDPAddr) }

// clientEpoch2 counts the client's DTLS 1.3 handshake-epoch records so far
// (its Finished and retransmissions). Called with r.mu held.
func (r *dropRelay) clientEpoch2() int {
	n := 0
	for _, b := range r.fromDev {
		if len(b) > 0 && isUnifiedHeader(b[0]) && b[0]&3 == 2 {
			n++
		}
	}
	return n
}

// TestLateHandshakeRecordsAnsweredAfterHandOver (issue 10): the server's
// last flight is lost after pion considered the handshake done and the
// session went over to the lean record layer. DTLS 1.2: the client
// retransmits its final flight and the session resends pion's
// ChangeCipherSpec+Finished verbatim (RFC 6347 §4.2.4), so the client's
// handshake completes. DTLS 1.3: the server's ACK of the client's Finished
// is lost; the client retransmits its Finished in epoch 2 and the session
// acknowledges it (RFC 9147 §7).
func TestLateHandshakeRecordsAnsweredAfterHandOver(t *testing.T) {
	backend := newEchoBackend(t)
	k12, k13 := testKey("late-12", 1), testKey("late-13", 2)
	k12.Legacy = true
	srv, addr := startServer(t, Config{Store: newMapStore(k12, k13), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})
	if srv.cfg.DataPlane != DataPlaneLean {
		t.Skip("the late-record answers are the lean record layer's; the pion plane answers them in pion")
	}

	t.Run("dtls1.2 final flight lost", func(t *testing.T) {
		dropped := false
		r := newDropRelay(t, addr, func(r *dropRelay, b []byte) bool {
			if !dropped && len(b) > 0 && b[0] == contentTypeCCS {
				dropped = true
				return true
			}
			return false
		})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c := client{id: k12.Identity, key: k12.Secret, version: protocol.Version1_2,
			suites: []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM_8}}
		conn, err := c.dial(ctx, r.addr())
		if err != nil {
			t.Fatalf("handshake with the final flight lost once: %v", err)
		}
		defer conn.Close()
		r.mu.Lock()
		n := r.dropped
		r.mu.Unlock()
		if n != 1 {
			t.Fatalf("dropped %d datagrams, want the one final flight", n)
		}
		roundTrip(t, conn, []byte("after a resent final flight"))
	})

	t.Run("dtls1.3 ACK lost", func(t *testing.T) {
		// Drop what the gateway sends while the client has sent only its
		// first Finished: the ACK. Its retransmission must be answered.
		r := newDropRelay(t, addr, func(r *dropRelay, b []byte) bool {
			return r.clientEpoch2() == 1 && len(b) > 0 && isUnifiedHeader(b[0])
		})
		c := client{id: k13.Identity, key: k13.Secret}
		conn := c.mustDial(t, r.addr())
		waitFor(t, func() bool { return srv.Stats().Established >= 1 }, "the session handed over")
		// The client retransmits its Finished on its own timer (1 s); the
		// session, on the lean record layer by now, answers it.
		waitFor(t, func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.clientEpoch2() < 2 {
				return false
			}
			return len(r.toDev) > 0 && isUnifiedHeader(r.toDev[len(r.toDev)-1][0])
		}, "an answer to the retransmitted Finished")
		r.mu.Lock()
		n := r.dropped
		r.mu.Unlock()
		if n == 0 {
			t.Fatal("nothing was dropped: the test did not lose the ACK")
		}
		roundTrip(t, conn, []byte("after an ACK from the lean plane"))
	})
}
