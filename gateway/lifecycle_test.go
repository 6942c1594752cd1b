package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
)

// TestRegistrationTracking: the gateway learns the location and lifetime of
// a registration, refreshes it on Update, and De-register closes the upstream
// socket (the backend forgot the device) while the DTLS session may stay.
func TestRegistrationTracking(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	k := testKey("tracked", 1)
	k.Endpoint = "urn:dev:tracked"
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.Addr().String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: addr.String(), Identity: k.Identity, Key: k.Secret, Endpoint: k.Endpoint, Lifetime: 90 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	loc, err := d.Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	regs := srv.Registrations()
	if len(regs) != 1 || regs[0].Location != loc || regs[0].Lifetime != 90*time.Second || regs[0].Endpoint != k.Endpoint {
		t.Fatalf("registrations %+v, location %s", regs, loc)
	}
	if regs[0].IdentityTag == "" || regs[0].IdentityTag == string(k.Identity) {
		t.Fatalf("R9: registration view shows identity tag %q", regs[0].IdentityTag)
	}
	first, _ := backend.Registration(k.Endpoint)
	if err := d.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(srv.Registrations()) == 0 }, "registration forgotten")
	// Registering again opens a fresh upstream socket: the backend sees a new address.
	if _, err := d.Register(ctx); err != nil {
		t.Fatal(err)
	}
	second, _ := backend.Registration(k.Endpoint)
	if first.Addr.String() == second.Addr.String() {
		t.Fatalf("upstream socket kept after De-register: %v", first.Addr)
	}
	if srv.Stats().Established != 1 {
		t.Fatal("the DTLS session did not survive De-register")
	}
}

// TestIdleLimitFollowsLifetime: a registered device may be silent for its
// lifetime plus grace, even when that is longer than IdleTimeout; an
// unregistered session is reaped after IdleTimeout.
func TestIdleLimitFollowsLifetime(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	reg, idle := testKey("registered", 1), testKey("idle", 2)
	reg.Endpoint, idle.Endpoint = "urn:dev:registered", "urn:dev:idle"
	srv, addr := startServer(t, Config{Store: newMapStore(reg, idle), Backends: map[string]string{"dm": backend.Addr().String()},
		IdleTimeout: 400 * time.Millisecond, RegistrationGrace: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dr, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: addr.String(), Identity: reg.Identity, Key: reg.Secret, Endpoint: reg.Endpoint, Lifetime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer dr.Close()
	if _, err := dr.Register(ctx); err != nil {
		t.Fatal(err)
	}
	di, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: addr.String(), Identity: idle.Identity, Key: idle.Secret, Endpoint: idle.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	defer di.Close()
	waitFor(t, func() bool { return srv.Stats().Established == 1 }, "unregistered session reaped")
	if len(srv.Registrations()) != 1 {
		t.Fatal("registered session reaped after IdleTimeout although its lifetime is longer")
	}
	waitFor(t, func() bool { return srv.Stats().Established == 0 }, "registered session reaped after lifetime + grace")
}
