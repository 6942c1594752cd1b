package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"testing"
	"time"
)

// TestL3BackendReachesOnlyOwningDevice: a datagram the backend sends to one
// session's upstream address reaches that device and no other (L3), and
// payloads pass byte-identical both ways (L4).
func TestL3BackendReachesOnlyOwningDevice(t *testing.T) {
	backend := newEchoBackend(t)
	a, b := testKey("dev-a", 1), testKey("dev-b", 2)
	_, addr := startServer(t, Config{Store: newMapStore(a, b), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})
	ca := (client{id: a.Identity, key: a.Secret}).mustDial(t, addr)
	cb := (client{id: b.Identity, key: b.Secret}).mustDial(t, addr)
	binary := make([]byte, 1000)
	_, _ = rand.Read(binary)
	roundTrip(t, ca, binary) // L4: arbitrary bytes, unchanged
	roundTrip(t, cb, []byte("from b"))
	srcs := backend.sources()
	if len(srcs) != 2 || srcs[0].String() == srcs[1].String() {
		t.Fatalf("want two distinct upstream addresses, got %v", srcs)
	}
	// The backend initiates a request to device A's upstream address.
	if _, err := backend.pc.WriteToUDP([]byte("server-initiated read"), srcs[0]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	_ = ca.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := ca.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], []byte("server-initiated read")) {
		t.Fatalf("device A: %q, %v", buf[:n], err)
	}
	_ = cb.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := cb.Read(buf); err == nil {
		t.Fatalf("device B received %q meant for A", buf[:n])
	}
}

// TestNewHandshakeReplacesOldSession: a rebooted device (same identity, new
// handshake) is never locked out; its old session and upstream socket close.
func TestNewHandshakeReplacesOldSession(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("dev", 1)
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})
	first := (client{id: k.Identity, key: k.Secret}).mustDial(t, addr)
	roundTrip(t, first, []byte("one"))
	second := (client{id: k.Identity, key: k.Secret}).mustDial(t, addr)
	roundTrip(t, second, []byte("two"))
	waitFor(t, func() bool { return srv.Stats().Established == 1 }, "one session left, have %d", srv.Stats().Established)
	// The old session got close_notify.
	_ = first.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := first.Read(make([]byte, 10)); err == nil {
		t.Fatal("old session still readable")
	}
}

// TestR10CloseIdentity closes one identity's session and leaves others alone.
func TestR10CloseIdentity(t *testing.T) {
	backend := newEchoBackend(t)
	a, b := testKey("dev-a", 1), testKey("dev-b", 2)
	srv, addr := startServer(t, Config{Store: newMapStore(a, b), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})
	ca := (client{id: a.Identity, key: a.Secret}).mustDial(t, addr)
	cb := (client{id: b.Identity, key: b.Secret}).mustDial(t, addr)
	// The device may finish its handshake a moment before the gateway has
	// taken the session over.
	waitFor(t, func() bool { return srv.Stats().Established == 2 }, "two sessions, have %d", srv.Stats().Established)
	if n := srv.CloseIdentity(a.Identity, "revoked"); n != 1 {
		t.Fatalf("closed %d sessions, want 1", n)
	}
	_ = ca.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := ca.Read(make([]byte, 10)); err == nil {
		t.Fatal("revoked session still open")
	}
	roundTrip(t, cb, []byte("b unaffected"))
}

// TestGarbageDoesNotDisturbSessions: 10,000 random, truncated and oversized
// datagrams from another socket while a device keeps exchanging messages.
func TestGarbageDoesNotDisturbSessions(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("dev", 1)
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}, MaxDatagram: 4096})
	conn := (client{id: k.Identity, key: k.Secret}).mustDial(t, addr)
	attacker, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 5000)
		for i := range 10000 {
			n := []int{0, 1, 13, 25, 60, 300, 1200, 5000}[i%8]
			_, _ = rand.Read(buf[:n])
			switch i % 5 {
			case 1: // looks like a ClientHello record header, then garbage
				if n >= 26 {
					buf[0], buf[1], buf[2], buf[3], buf[4], buf[13] = 22, 0xfe, 0xfd, 0, 0, 1
				}
			case 2: // a DTLS 1.3 unified header with a CID bit
				if n > 0 {
					buf[0] = 0x3c
				}
			case 3: // a tls12_cid record
				if n > 0 {
					buf[0] = 25
				}
			}
			_, _ = attacker.Write(buf[:n])
		}
	}()
	for i := 0; ; i++ {
		// Like a CoAP CON, the device retransmits: under a flood the kernel
		// may drop a datagram before the gateway reads it.
		retryRoundTrip(t, conn, []byte{byte(i), 'x'})
		select {
		case <-done:
			roundTrip(t, conn, []byte("after the flood"))
			if srv.Stats().Established != 1 {
				t.Fatalf("established sessions: %d", srv.Stats().Established)
			}
			return
		default:
		}
	}
}

func TestIdleTimeoutClosesSession(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("dev", 1)
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}, IdleTimeout: 300 * time.Millisecond})
	conn := (client{id: k.Identity, key: k.Secret}).mustDial(t, addr)
	roundTrip(t, conn, []byte("x"))
	waitFor(t, func() bool { return srv.Stats().Sessions == 0 }, "idle session reaped")
}

func TestShutdownSendsCloseNotify(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("dev", 1)
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn := (client{id: k.Identity, key: k.Secret}).mustDial(t, addr)
	roundTrip(t, conn, []byte("x"))
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Read(make([]byte, 10)); err == nil {
		t.Fatal("session still open after shutdown")
	}
	if _, err := (client{id: k.Identity, key: k.Secret}).dial(ctx, addr); err == nil {
		t.Fatal("handshake accepted after shutdown")
	}
}

func retryRoundTrip(t *testing.T, conn interface {
	Write([]byte) (int, error)
	Read([]byte) (int, error)
	SetReadDeadline(time.Time) error
}, payload []byte) {
	t.Helper()
	msg := coapNON(payload)
	want := append([]byte("echo:"), msg...)
	buf := make([]byte, 2000)
	for attempt := 0; attempt < 20; attempt++ {
		if _, err := conn.Write(msg); err != nil {
			t.Fatalf("write: %v", err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				break
			}
			if bytes.Equal(buf[:n], want) {
				return
			}
		}
	}
	t.Fatalf("no answer to %q after 20 attempts", msg)
}

// TestSweeperSkipsSessionsWithNothingDue: after a pass, the sweeper knows
// when a session next needs it (its idle limit here, before the cipher
// release and the late-handshake expiry) and skips it until then; traffic
// makes it look again at the next pass; the idle limit still closes it.
func TestSweeperSkipsSessionsWithNothingDue(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("dev", 1)
	const idle = 3 * time.Second // sweeps every 750 ms
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}, IdleTimeout: idle})
	conn := (client{id: k.Identity, key: k.Secret}).mustDial(t, addr)
	roundTrip(t, conn, []byte("x"))
	ss := srv.table.snapshot()
	if len(ss) != 1 {
		t.Fatalf("%d sessions", len(ss))
	}
	s := ss[0]
	due := func() (after, want int64) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.sweepAfter.Load(), s.lastActive.Load() + int64(idle)
	}
	waitFor(t, func() bool { a, _ := due(); return a != 0 }, "a sweep pass to set when the session is next due")
	if after, want := due(); after != want {
		t.Fatalf("sweepAfter %d, want the idle limit %d (last traffic + %v)", after, want, idle)
	}
	roundTrip(t, conn, []byte("y"))
	if after, want := due(); after != 0 && after != want {
		t.Fatalf("after traffic: sweepAfter %d, want 0 (look at the next pass) or the new idle limit %d", after, want)
	}
	waitFor(t, func() bool { return srv.Stats().Sessions == 0 }, "idle session reaped")
}
