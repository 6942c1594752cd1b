package gateway

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/pskstore"
)

// Issue 9.1: a new handshake from the address of a live session. A device
// that reboots handshakes again from the same address and port; the
// gateway must start a new handshake beside the live session (RFC 6347
// §4.2.8, RFC 9147 §5.11) and replace the old session only when the new
// one completes, so a spoofed ClientHello cannot end a live session.

// lifecycleVersions are the DTLS versions the lifecycle tests run over: the
// DTLS 1.2 key is legacy so that devsim's default CCM_8 suite (RFC 7925)
// passes R3.
var lifecycleVersions = []struct{ name, version string }{{"dtls1.3", "1.3"}, {"dtls1.2", "1.2"}}

// lifecycleKey is a key bound to an endpoint, usable over both versions.
func lifecycleKey(id string) pskstore.Key {
	k := testKey(id, 1)
	k.Endpoint = "urn:dev:" + id
	k.Legacy = true
	return k
}

// newLwM2MBackend starts a devsim LwM2M server for one test.
func newLwM2MBackend(t *testing.T) *devsim.Backend {
	t.Helper()
	b, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// dialDevice connects a devsim device with short CoAP and handshake
// budgets, so a gateway that locks it out fails the test in seconds rather
// than at the 75 min idle timeout.
func dialDevice(t *testing.T, ctx context.Context, server net.Addr, k pskstore.Key, version string, tweak func(*devsim.DeviceConfig)) *devsim.Device {
	t.Helper()
	cfg := devsim.DeviceConfig{Server: server.String(), Identity: k.Identity, Key: k.Secret, Endpoint: k.Endpoint,
		Version: version, HandshakeTimeout: 5 * time.Second, ACKTimeout: 500 * time.Millisecond, MaxRetransmit: 3}
	if tweak != nil {
		tweak(&cfg)
	}
	d, err := devsim.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("%s: handshake: %v", k.Identity, err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// sessionOf is the identity's current established session, nil if none.
func sessionOf(srv *Server, identity []byte) *session {
	srv.table.mu.RLock()
	defer srv.table.mu.RUnlock()
	return srv.table.ids[string(identity)]
}

func addrPortOfAddr(a net.Addr) netip.AddrPort { return a.(*net.UDPAddr).AddrPort() }

// TestRebootFromSamePortGetsNewSession (issue 9.1, one session per
// identity): a device that reboots and handshakes again from the same
// address and port gets a new session at once and registers again. While
// its new handshake is past the cookie but not complete (the relay holds
// its final flight), the old session is still established and routed;
// only the completed handshake replaces it. The old gateway routed the new
// ClientHello to the old session and dropped it: the reboot timed out.
func TestRebootFromSamePortGetsNewSession(t *testing.T) {
	for _, v := range lifecycleVersions {
		t.Run(v.name, func(t *testing.T) {
			backend := newLwM2MBackend(t)
			k := lifecycleKey("rebooter")
			srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.Addr().String()}})
			tap := newTapRelay(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d := dialDevice(t, ctx, tap.addr(), k, v.version, nil)
			if _, err := d.Register(ctx); err != nil {
				t.Fatal(err)
			}
			dev := addrPortOfAddr(d.LocalAddr())
			waitFor(t, func() bool { return sessionOf(srv, k.Identity) != nil }, "session established")
			old := sessionOf(srv, k.Identity)

			// Hold the device's datagrams once the gateway has answered
			// its new ClientHello with a ServerHello: its final flight.
			before := serverHellos(tap.datagrams(dev))
			tap.holdWhen(func(p *tapPeer, _ []byte) bool { return serverHellos(p.datagrams()) > before })
			rebooted := make(chan error, 1)
			go func() { rebooted <- d.Reboot(ctx) }()
			waitFor(t, func() bool { return tap.heldCount() > 0 }, "the new handshake reached the device's final flight")

			l := old.l
			s, h := srv.table.lookup(l, tap.gatewaySide(dev))
			if s != old || h == nil || old.isClosed() {
				t.Fatalf("while the new handshake runs: address routes to session %p (old %p, closed %v) and handshake %v",
					s, old, old.isClosed(), h)
			}
			if st := srv.Stats(); st.Established != 1 || st.Handshaking != 1 {
				t.Fatalf("established %d, handshaking %d: want the old session beside the new handshake", st.Established, st.Handshaking)
			}

			tap.release()
			if err := <-rebooted; err != nil {
				t.Fatalf("reboot (new handshake and Register): %v", err)
			}
			waitFor(t, old.isClosed, "old session closed once the new one is established")
			if now := sessionOf(srv, k.Identity); now == nil || now == old {
				t.Fatalf("identity's session after the reboot: %p (old %p)", now, old)
			}
			if st := srv.Stats(); st.Established != 1 || st.HandshakesOK != 2 {
				t.Fatalf("established %d, handshakes ok %d: want 1 and 2", st.Established, st.HandshakesOK)
			}
			// The new session works both ways (L3: its own upstream socket).
			if err := d.Update(ctx); err != nil {
				t.Fatalf("update after reboot: %v", err)
			}
			if v, err := backend.Read(ctx, k.Endpoint, "/3/0/0"); err != nil || len(v) == 0 {
				t.Fatalf("backend read after reboot: %q, %v", v, err)
			}
		})
	}
}

// TestSpoofedClientHelloLeavesLiveSession (issue 9.1): ClientHellos sent
// from the address of a live session by someone who never completes the
// handshake (here: the device's own captured first hello, replayed) start a
// handshake beside the session, which neither ends nor disturbs it: the
// device and the backend keep exchanging requests while the spoofed
// handshake runs and after it has timed out.
func TestSpoofedClientHelloLeavesLiveSession(t *testing.T) {
	for _, v := range lifecycleVersions {
		t.Run(v.name, func(t *testing.T) {
			backend := newLwM2MBackend(t)
			k := lifecycleKey("spoofed")
			srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.Addr().String()},
				HandshakeTimeout: 4 * time.Second})
			tap := newTapRelay(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d := dialDevice(t, ctx, tap.addr(), k, v.version, nil)
			if _, err := d.Register(ctx); err != nil {
				t.Fatal(err)
			}
			dev := addrPortOfAddr(d.LocalAddr())
			waitFor(t, func() bool { return sessionOf(srv, k.Identity) != nil }, "session established")
			live := sessionOf(srv, k.Identity)
			hellos := clientHellos(tap.datagrams(dev))
			if len(hellos) == 0 {
				t.Fatal("relay saw no ClientHello")
			}

			// The first hello, without a cookie: a spoofer never sees the
			// gateway's cookie, so its handshake stays embryonic.
			tap.inject(dev, hellos[0])
			waitFor(t, func() bool { return srv.Stats().Handshaking == 1 }, "a handshake beside the live session")
			exchange := func(when string) {
				t.Helper()
				if err := d.Update(ctx); err != nil {
					t.Fatalf("update %s: %v", when, err)
				}
				if v, err := backend.Read(ctx, k.Endpoint, "/3/0/0"); err != nil || len(v) == 0 {
					t.Fatalf("backend read %s: %q, %v", when, v, err)
				}
			}
			exchange("while the spoofed handshake runs")
			if srv.Stats().Handshaking != 1 {
				t.Fatal("the spoofed handshake ended before the exchange: the test proved nothing")
			}
			waitFor(t, func() bool { return srv.Stats().Handshaking == 0 }, "spoofed handshake timed out")
			exchange("after the spoofed handshake ended")
			st := srv.Stats()
			if sessionOf(srv, k.Identity) != live || live.isClosed() || st.Established != 1 || st.HandshakesOK != 1 {
				t.Fatalf("live session replaced or closed: established %d, handshakes ok %d, failed %v",
					st.Established, st.HandshakesOK, st.HandshakesFailed)
			}
			if st.HandshakesFailed["timeout"] != 1 {
				t.Fatalf("spoofed handshake failures %v, want one timeout", st.HandshakesFailed)
			}
		})
	}
}
