package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// TestBackendDownAnswered503 (issue 9.8): while the backend's UDP port is
// closed — the kernel answers with ICMP port unreachable, the upstream
// socket reports ECONNREFUSED — a device's confirmable request is answered
// 5.03 Service Unavailable with Max-Age = Config.BackendRetryAfter by the
// gateway itself, counted under the refusal rule backend_down, and the
// session stays. The old gateway forwarded into the void and the device
// only timed out. Once the backend is back, requests are forwarded again
// (at the latest after the gateway's down hold, backendDownHold).
func TestBackendDownAnswered503(t *testing.T) {
	backend := newLwM2MBackend(t)
	backendAddr := backend.Addr().String()
	k := lifecycleKey("patient")
	const retryAfter = 7 * time.Second
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backendAddr}, BackendRetryAfter: retryAfter})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := dialDevice(t, ctx, addr, k, "1.3", nil)
	loc, err := d.Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return sessionOf(srv, k.Identity) != nil }, "session established")
	live := sessionOf(srv, k.Identity)
	if err := backend.Close(); err != nil {
		t.Fatal(err)
	}
	update := func() (*pool.Message, error) {
		req := pool.NewMessage(ctx)
		req.SetCode(codes.POST)
		if err := req.SetPath(loc); err != nil {
			t.Fatal(err)
		}
		return d.Do(ctx, req)
	}
	// The first transmission meets the closed port; the device's
	// retransmission (ACKTimeout 500 ms) meets a backend known to be down.
	resp, err := update()
	if err != nil {
		t.Fatalf("update while the backend is down: %v (want a 5.03 from the gateway)", err)
	}
	maxAge, merr := resp.Options().GetUint32(message.MaxAge)
	if resp.Code() != codes.ServiceUnavailable || merr != nil || maxAge != uint32(retryAfter/time.Second) {
		t.Fatalf("answer %v with Max-Age %d (%v), want 5.03 with Max-Age %d", resp.Code(), maxAge, merr, retryAfter/time.Second)
	}
	if got := srv.Stats().Refused["backend_down"]; got == 0 {
		t.Fatal("5.03 not counted under backend_down")
	}
	if sessionOf(srv, k.Identity) != live || live.isClosed() || srv.Stats().Established != 1 {
		t.Fatal("the session did not stay while the backend was down")
	}

	back, err := devsim.NewBackend(backendAddr, nil)
	if err != nil {
		t.Fatalf("restarting the backend on %s: %v", backendAddr, err)
	}
	t.Cleanup(func() { _ = back.Close() })
	deadline := time.Now().Add(backendDownHold + 10*time.Second)
	for {
		resp, err := update()
		if err != nil {
			t.Fatalf("update after the backend came back: %v", err)
		}
		if resp.Code() != codes.ServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still 5.03 %v after the backend came back", backendDownHold+10*time.Second)
		}
		time.Sleep(200 * time.Millisecond) // the device honours no Max-Age here: the test probes
	}
	// The restarted backend lost the registration and answers 4.04 (a
	// device then registers again): what matters is that it got the Update.
	got := back.Received()
	if len(got) == 0 || got[len(got)-1].Path != loc {
		t.Fatalf("the restarted backend received %+v, want the Update of %s", got, loc)
	}
	if sessionOf(srv, k.Identity) != live || live.isClosed() {
		t.Fatal("the session did not survive the outage")
	}
}
