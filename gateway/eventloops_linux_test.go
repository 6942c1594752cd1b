//go:build linux

package gateway

import (
	"fmt"
	"net"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4"
)

// TestEventLoopsShareTheListenersAddress: with Config.EventLoops 2 the
// listener's address is bound twice (SO_REUSEPORT) and the kernel spreads
// devices over the two sockets; each session belongs to the loop whose
// socket took its ClientHello, and that loop also reads its upstream
// socket, so a device's requests and answers stay on one loop. Every
// device is served, on both loops, at one address.
func TestEventLoopsShareTheListenersAddress(t *testing.T) {
	backend := newEchoBackend(t)
	const devices = 32 // all on one socket by chance: 2 in 2^32
	keys := make([]pskstore.Key, devices)
	for i := range keys {
		keys[i] = testKey(fmt.Sprintf("dev-%02d", i), byte(i+1))
	}
	srv, addr := startServer(t, Config{Store: newMapStore(keys...), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}, EventLoops: 2})
	if n := len(srv.Addrs()); n != 1 {
		t.Fatalf("%d addresses for one listener", n)
	}
	if n := len(srv.listeners[0].socks); n != 2 {
		t.Fatalf("%d sockets for 2 event loops", n)
	}
	conns := make([]*dtls.Conn, devices)
	for i, k := range keys {
		conns[i] = (client{id: k.Identity, key: k.Secret}).mustDial(t, addr)
		roundTrip(t, conns[i], []byte("first"))
	}
	for _, c := range conns {
		roundTrip(t, c, []byte("second"))
	}
	perLoop := checkUpstreamsOnOwnLoop(t, srv)
	for _, s := range srv.table.snapshot() {
		s.mu.Lock()
		if len(s.ups) != 1 {
			t.Errorf("session with %d upstream sockets, want 1", len(s.ups))
		}
		s.mu.Unlock()
	}
	if perLoop[0]+perLoop[1] != devices || perLoop[0] == 0 || perLoop[1] == 0 {
		t.Fatalf("sessions per loop %v: want %d devices spread over both", perLoop, devices)
	}
	t.Logf("sessions per loop: %v", perLoop)
}

// TestEventLoopsBounds: a negative or absurd number of loops is refused
// with an error naming the field; zero means one.
func TestEventLoopsBounds(t *testing.T) {
	for _, n := range []int{-1, maxEventLoops + 1} {
		if _, err := New(Config{Store: newMapStore(), Backends: map[string]string{"dm": "127.0.0.1:9"}, EventLoops: n}); err == nil {
			t.Errorf("EventLoops %d accepted", n)
		}
	}
	srv, err := New(Config{Store: newMapStore(), Backends: map[string]string{"dm": "127.0.0.1:9"}})
	if err != nil {
		t.Fatal(err)
	}
	if srv.cfg.EventLoops != 1 {
		t.Fatalf("EventLoops zero value became %d, want 1", srv.cfg.EventLoops)
	}
}

// TestEventLoopsNATRebinding: with two event loops, a device whose NAT
// binding changes lands, by the kernel's hash of its new address and port,
// on either loop's socket. A record read by the other loop than the one
// that owns the session (and reads its upstream socket) still reaches the
// session by its CID, moves its address, and the backend's answer reaches
// the device at the new address; the backend keeps seeing one upstream
// address. gateway_event_loop_datagrams_total (Server.loopReads) shows
// which loop read each datagram.
func TestEventLoopsNATRebinding(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("roamer", 1)
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}, EventLoops: 2})
	relay := newNATRelay(t, addr)
	conn := (client{id: k.Identity, key: k.Secret}).mustDial(t, relay.dev.LocalAddr().(*net.UDPAddr))
	roundTrip(t, conn, []byte("before"))
	sessions := srv.table.snapshot()
	if len(sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(sessions))
	}
	s := sessions[0]
	home, other := s.loop, 1-s.loop
	crossed := 0
	for i := 0; i < 40 && crossed < 2; i++ {
		relay.rebind()
		before := srv.loopReads[other].Load()
		roundTrip(t, conn, fmt.Appendf(nil, "after rebind %d", i))
		if srv.loopReads[other].Load() > before {
			crossed++
		}
	}
	if crossed < 2 {
		t.Fatalf("no rebind in 40 landed twice on the loop that does not own the session (2^-39 by chance)")
	}
	if got := srv.table.snapshot(); len(got) != 1 || got[0] != s || s.loop != home {
		t.Fatalf("after rebinding: %d sessions, the same: %v, loop %d (was %d)", len(got), len(got) == 1 && got[0] == s, s.loop, home)
	}
	checkUpstreamsOnOwnLoop(t, srv)
	if seen := backend.distinctSources(); len(seen) != 1 {
		t.Errorf("the backend saw %d upstream addresses, want 1: %v", len(seen), seen)
	}
}
