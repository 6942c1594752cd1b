package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// lwm2mSetup runs a gateway in front of the devsim LwM2M backend with one
// key bound to endpoint "urn:dev:bound".
func lwm2mSetup(t *testing.T) (*Server, *devsim.Backend, func(endpoint string) *devsim.Device) {
	t.Helper()
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = backend.Close() })
	k := testKey("dev", 1)
	k.Endpoint = "urn:dev:bound"
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.Addr().String()}})
	dial := func(endpoint string) *devsim.Device {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: addr.String(), Identity: k.Identity, Key: k.Secret,
			Endpoint: endpoint, ACKTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}
	return srv, backend, dial
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	var ce *devsim.CodeError
	if !errors.As(err, &ce) || ce.Code != want {
		t.Fatalf("got %v, want response %v", err, want)
	}
}

func TestL1RegisterWrongEndpointForbidden(t *testing.T) {
	srv, backend, dial := lwm2mSetup(t)
	d := dial("urn:dev:someone-else")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := d.Register(ctx)
	wantCode(t, err, codes.Forbidden)
	if err := d.BootstrapRequest(ctx); err == nil {
		t.Fatal("bootstrap request for another endpoint forwarded")
	}
	if n := len(backend.Received()); n != 0 {
		t.Fatalf("backend received %d requests", n)
	}
	if got := srv.Stats().Refused["L1"]; got != 2 {
		t.Fatalf("L1 refusals counted: %d", got)
	}
}

func TestL1RegisterWithoutEndpointBadRequest(t *testing.T) {
	_, backend, dial := lwm2mSetup(t)
	d := dial("urn:dev:bound")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := pool.NewMessage(ctx)
	req.SetCode(codes.POST)
	if err := req.SetPath("/rd"); err != nil {
		t.Fatal(err)
	}
	req.AddQuery("lt=60")
	req.SetMessageID(-1)
	resp, err := d.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.BadRequest {
		t.Fatalf("code %v, want 4.00", resp.Code())
	}
	if n := len(backend.Received()); n != 0 {
		t.Fatalf("backend received %d requests", n)
	}
}

// TestL2UpdateOfForeignLocationForbidden: a device never updates or
// de-registers a registration another identity created (4.03, nothing
// forwarded); a location the gateway knows nothing of gets 4.04 so a real
// client re-registers (issue 9.2); its own registration it updates.
func TestL2UpdateOfForeignLocationForbidden(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = backend.Close() })
	a, b := testKey("dev-a", 1), testKey("dev-b", 2)
	a.Endpoint, b.Endpoint = "urn:dev:a", "urn:dev:b"
	srv, addr := startServer(t, Config{Store: newMapStore(a, b), Backends: map[string]string{"dm": backend.Addr().String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dial := func(k pskstore.Key) *devsim.Device {
		d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: addr.String(), Identity: k.Identity, Key: k.Secret,
			Endpoint: k.Endpoint, ACKTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}
	da, db := dial(a), dial(b)
	locA, err := da.Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx); err != nil {
		t.Fatalf("update of own registration: %v", err)
	}
	before := len(backend.Received())
	for _, tc := range []struct {
		path string
		want codes.Code
	}{
		{locA, codes.Forbidden},          // another identity's registration
		{"/rd/not-mine", codes.NotFound}, // no registration the gateway knows
		{locA + "x", codes.NotFound},
	} {
		req := pool.NewMessage(ctx)
		req.SetCode(codes.POST)
		if err := req.SetPath(tc.path); err != nil {
			t.Fatal(err)
		}
		req.SetMessageID(-1)
		resp, err := db.Do(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code() != tc.want {
			t.Fatalf("update %s: code %v, want %v", tc.path, resp.Code(), tc.want)
		}
	}
	// De-register of another identity's registration: refused too.
	del := pool.NewMessage(ctx)
	del.SetCode(codes.DELETE)
	if err := del.SetPath(locA); err != nil {
		t.Fatal(err)
	}
	del.SetMessageID(-1)
	if resp, err := db.Do(ctx, del); err != nil || resp.Code() != codes.Forbidden {
		t.Fatalf("delete of another identity's registration: %v, %v", resp, err)
	}
	if n := len(backend.Received()); n != before {
		t.Fatalf("backend received %d refused requests", n-before)
	}
	if got := srv.Stats().Refused["L2"]; got < 4 {
		t.Fatalf("L2 refusals counted: %d", got)
	}
	if err := db.Deregister(ctx); err != nil {
		t.Fatalf("deregister own registration: %v", err)
	}
	// After De-register the old location is no longer this identity's.
	if err := db.Update(ctx); err == nil {
		t.Fatal("update after de-register forwarded")
	}
	if err := da.Update(ctx); err != nil {
		t.Fatalf("device A's own update after B's attempts: %v", err)
	}
}
