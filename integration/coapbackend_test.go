package integration

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// coapBackend is a backend that keeps every datagram byte for byte and
// answers each confirmable request with a piggybacked 2.01 Created carrying
// Location-Path /rd/w0lf, which it also keeps: a test can then compare
// both directions exactly. (devsim.Backend speaks LwM2M properly but
// chooses its own locations; a peer that prints replies as C strings needs
// replies the test knows to hold no NUL byte.)
type coapBackend struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []exchange
}

// exchange is one datagram the backend got and what it answered (nil if
// nothing).
type exchange struct {
	request, reply []byte
}

func newCoAPBackend(t *testing.T) *coapBackend {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b := &coapBackend{conn: conn}
	done := make(chan struct{})
	go func() { defer close(done); b.serve(t) }()
	t.Cleanup(func() { conn.Close(); <-done })
	return b
}

func (b *coapBackend) addr() string { return b.conn.LocalAddr().String() }

func (b *coapBackend) serve(t *testing.T) {
	buf := make([]byte, 65536)
	for {
		n, from, err := b.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		req := append([]byte(nil), buf[:n]...)
		reply := created(req)
		if bytes.IndexByte(reply, 0) >= 0 {
			t.Errorf("backend reply %x holds a NUL byte: the client would print it cut", reply)
		}
		b.mu.Lock()
		b.got = append(b.got, exchange{request: req, reply: reply})
		b.mu.Unlock()
		if reply != nil {
			_, _ = b.conn.WriteToUDP(reply, from)
		}
	}
}

// created is the ACK 2.01 Created with Location-Path /rd/w0lf answering a
// confirmable request, or nil for anything else.
func created(req []byte) []byte {
	m := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(req, &m); err != nil || m.Type != message.Confirmable || m.Code>>5 != 0 || m.Code == codes.Empty {
		return nil
	}
	out := message.Message{Token: m.Token, Code: codes.Created, MessageID: m.MessageID, Type: message.Acknowledgement,
		Options: make(message.Options, 0, 2)}
	opts, _, err := out.Options.SetLocationPath(make([]byte, 16), "/rd/w0lf")
	if err != nil {
		return nil
	}
	out.Options = opts
	reply := make([]byte, 64)
	n, err := coder.DefaultCoder.Encode(out, reply)
	if err != nil {
		return nil
	}
	return reply[:n]
}

func (b *coapBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.got)
}

// wait waits until the backend has got n datagrams and returns them all.
func (b *coapBackend) wait(t *testing.T, n int) []exchange {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		got := append([]exchange(nil), b.got...)
		b.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend got %d datagrams, want %d", len(got), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
