package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
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

func TestL2UpdateOfForeignLocationForbidden(t *testing.T) {
	srv, backend, dial := lwm2mSetup(t)
	d := dial("urn:dev:bound")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	loc, err := d.Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Update(ctx); err != nil {
		t.Fatalf("update of own registration: %v", err)
	}
	before := len(backend.Received())
	for _, path := range []string{"/rd/not-mine", loc + "x", "/rd"} {
		req := pool.NewMessage(ctx)
		req.SetCode(codes.POST)
		if err := req.SetPath(path); err != nil {
			t.Fatal(err)
		}
		req.SetMessageID(-1)
		resp, err := d.Do(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if path != "/rd" && resp.Code() != codes.Forbidden {
			t.Fatalf("update %s: code %v, want 4.03", path, resp.Code())
		}
	}
	if n := len(backend.Received()); n != before {
		t.Fatalf("backend received %d refused requests", n-before)
	}
	if got := srv.Stats().Refused["L2"]; got < 2 {
		t.Fatalf("L2 refusals counted: %d", got)
	}
	if err := d.Deregister(ctx); err != nil {
		t.Fatalf("deregister own registration: %v", err)
	}
	// After De-register the old location is no longer this session's.
	if err := d.Update(ctx); err == nil {
		t.Fatal("update after de-register forwarded")
	}
}
