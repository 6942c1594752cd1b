package gateway

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/statestore"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Issue 9.2: a registration belongs to the identity, not to one DTLS
// session (L2). After a new handshake of the same identity the device
// updates the registration it created; a location the gateway does not
// know is answered 4.04 (a LwM2M client registers again), never 4.03; a
// location another identity created stays refused (4.03).

// registersAt counts the Registers the backend received.
func registersAt(b *devsim.Backend) int {
	n := 0
	for _, r := range b.Received() {
		if r.Path == "/rd" && r.Code == codes.POST {
			n++
		}
	}
	return n
}

// TestRehandshakeKeepsRegistration (issue 9.2, L2): a device that
// re-handshakes from the same port — explicitly, or before a request after
// being idle longer than RehandshakeIdle, as a tinydtls client behind a NAT
// does — sends its Update to the registration it already has: the gateway
// forwards it, answers no 4.03, and the device does not register again.
// The old gateway answered 4.03 and the client fell back to bootstrap.
func TestRehandshakeKeepsRegistration(t *testing.T) {
	for _, v := range lifecycleVersions {
		t.Run(v.name, func(t *testing.T) {
			backend := newLwM2MBackend(t)
			k := lifecycleKey("rehandshaker")
			srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.Addr().String()}})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			const idle = time.Second
			d := dialDevice(t, ctx, addr, k, v.version, func(c *devsim.DeviceConfig) { c.RehandshakeIdle = idle })
			loc, err := d.Register(ctx)
			if err != nil {
				t.Fatal(err)
			}
			check := func(step string, handshakes uint64, updates int) {
				t.Helper()
				if err := d.Update(ctx); err != nil {
					t.Fatalf("%s: update: %v", step, err)
				}
				reg, ok := backend.Registration(k.Endpoint)
				if !ok || reg.Location != loc || reg.Updates != updates {
					t.Fatalf("%s: backend registration %+v, want location %s with %d updates", step, reg, loc, updates)
				}
				st := srv.Stats()
				if n := registersAt(backend); n != 1 || st.Refused["L2"] != 0 || st.HandshakesOK != handshakes || d.Location() != loc {
					t.Fatalf("%s: %d Registers at the backend, L2 refusals %d, handshakes %d (want %d), device location %q",
						step, n, st.Refused["L2"], st.HandshakesOK, handshakes, d.Location())
				}
				if v, err := backend.Read(ctx, k.Endpoint, "/3/0/0"); err != nil || len(v) == 0 {
					t.Fatalf("%s: backend read: %q, %v", step, v, err)
				}
			}
			if err := d.Rehandshake(ctx); err != nil {
				t.Fatal(err)
			}
			check("after a re-handshake", 2, 1)
			// Radio off for longer than RehandshakeIdle: the next Update
			// runs a new handshake first.
			if err := d.Sleep(ctx, idle+idle/2); err != nil {
				t.Fatal(err)
			}
			check("after an idle re-handshake", 3, 2)
			if n := d.Stats().IdleRehandshakes; n != 1 {
				t.Fatalf("idle re-handshakes: %d, want 1", n)
			}
		})
	}
}

// TestL2OtherIdentityStillRefused (issue 9.2, L2): keeping registrations
// across sessions gives no identity another one's location: a second
// identity that Updates or De-registers the first one's location gets 4.03
// and nothing is forwarded, before and after either of them
// re-handshakes; the owner then updates it.
func TestL2OtherIdentityStillRefused(t *testing.T) {
	backend := newLwM2MBackend(t)
	owner, other := lifecycleKey("owner"), lifecycleKey("other")
	srv, addr := startServer(t, Config{Store: newMapStore(owner, other), Backends: map[string]string{"dm": backend.Addr().String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	do := dialDevice(t, ctx, addr, owner, "1.3", nil)
	dx := dialDevice(t, ctx, addr, other, "1.3", nil)
	loc, err := do.Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dx.Register(ctx); err != nil {
		t.Fatal(err)
	}
	dx.SetLocation(loc)
	received := len(backend.Received())
	try := func(step string) {
		t.Helper()
		wantCode(t, dx.Update(ctx), codes.Forbidden)
		wantCode(t, dx.Deregister(ctx), codes.Forbidden)
		if n := len(backend.Received()); n != received {
			t.Fatalf("%s: the backend received %d refused requests", step, n-received)
		}
	}
	try("live sessions")
	if err := do.Rehandshake(ctx); err != nil {
		t.Fatal(err)
	}
	try("after the owner re-handshook")
	if err := dx.Rehandshake(ctx); err != nil {
		t.Fatal(err)
	}
	try("after the other identity re-handshook")
	if got := srv.Stats().Refused["L2"]; got < 6 { // more if a request was retransmitted
		t.Fatalf("L2 refusals counted: %d, want 6", got)
	}
	if err := do.Update(ctx); err != nil {
		t.Fatalf("the owner's update: %v", err)
	}
	if reg, _ := backend.Registration(owner.Endpoint); reg.Updates != 1 {
		t.Fatalf("owner's registration %+v, want one update", reg)
	}
}

// savedLocation is the location the registrations file holds for an
// identity, "" if none.
func savedLocation(t *testing.T, f *statestore.RegistrationFile, identity []byte) string {
	t.Helper()
	regs, err := f.LoadRegistrations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range regs {
		if string(r.Identity) == string(identity) {
			return r.Location
		}
	}
	return ""
}

// TestGatewayRestartThenUpdate (issue 9.2, L2): a gateway restarts on the
// same address; the device finds its session gone and does what a LwM2M
// client does (devsim Reconnect): a new handshake, then an Update to its
// registration. With a registration store the restarted gateway knows the
// location and forwards the Update: the device keeps its registration.
// Without one it does not know the location and answers 4.04 itself (never
// 4.03), and the device registers again. Either way it keeps working.
func TestGatewayRestartThenUpdate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store bool
	}{{"registration store", true}, {"no registration store", false}} {
		t.Run(tc.name, func(t *testing.T) {
			backend := newLwM2MBackend(t)
			k := lifecycleKey("restarted")
			cfg := Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.Addr().String()}}
			var regs *statestore.RegistrationFile
			if tc.store {
				var err error
				if regs, err = statestore.OpenRegistrations(filepath.Join(t.TempDir(), "registrations.json")); err != nil {
					t.Fatal(err)
				}
				cfg.Registrations = regs
			}
			first, addr := startServer(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d := dialDevice(t, ctx, addr, k, "1.3", nil)
			loc, err := d.Register(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.store {
				waitFor(t, func() bool { return savedLocation(t, regs, k.Identity) == loc }, "registration saved")
			}
			if err := first.Close(); err != nil {
				t.Fatal(err)
			}
			cfg.Listeners = []Listener{{Address: addr.String()}}
			second, _ := startServer(t, cfg)
			if err := d.Reconnect(ctx); err != nil {
				t.Fatalf("reconnect after the restart: %v", err)
			}
			reg, ok := backend.Registration(k.Endpoint)
			st := second.Stats()
			if tc.store {
				if !ok || reg.Location != loc || reg.Updates != 1 || registersAt(backend) != 1 || st.Refused["L2"] != 0 {
					t.Fatalf("registration %+v (want %s, updated once), %d Registers, L2 refusals %d",
						reg, loc, registersAt(backend), st.Refused["L2"])
				}
			} else {
				// The gateway answered the Update 4.04 itself (the
				// backend never saw it) and the device registered again.
				if !ok || reg.Updates != 0 || registersAt(backend) != 2 || st.Refused["L2"] == 0 || d.Location() != reg.Location {
					t.Fatalf("registration %+v, %d Registers (want 2), L2 refusals %d, device location %q",
						reg, registersAt(backend), st.Refused["L2"], d.Location())
				}
			}
			if err := d.Update(ctx); err != nil {
				t.Fatalf("update after the restart: %v", err)
			}
			if v, err := backend.Read(ctx, k.Endpoint, "/3/0/0"); err != nil || len(v) == 0 {
				t.Fatalf("backend read after the restart: %q, %v", v, err)
			}
			if d.Stats().Reconnects != 1 {
				t.Fatalf("device stats %+v", d.Stats())
			}
		})
	}
}
