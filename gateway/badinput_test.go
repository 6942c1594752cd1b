package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// TestBadLwM2MInputIsAnsweredAndCounted: a 10 KB ep, a truncated option, an
// Update of a location that never existed and a flood of Registers from one
// session each get the right answer (or are dropped), are counted, and
// another device is unaffected.
func TestBadLwM2MInputIsAnsweredAndCounted(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	bad, good := testKey("bad", 1), testKey("good", 2)
	bad.Endpoint, good.Endpoint = "urn:dev:bad", "urn:dev:good"
	store := newMapStore(bad, good)
	srv, addr := startServer(t, Config{Store: store, Backends: map[string]string{"dm": backend.Addr().String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(k pskstore.Key) *devsim.Device {
		d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: addr.String(), Identity: k.Identity, Key: k.Secret, Endpoint: k.Endpoint, ACKTimeout: 300 * time.Millisecond, MaxRetransmit: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}
	dg, db := dial(good), dial(bad)
	if _, err := dg.Register(ctx); err != nil {
		t.Fatal(err)
	}
	do := func(path string, query ...string) codes.Code {
		req := pool.NewMessage(ctx)
		req.SetCode(codes.POST)
		_ = req.SetPath(path)
		for _, q := range query {
			req.AddQuery(q)
		}
		req.SetMessageID(-1)
		resp, err := db.Do(ctx, req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		return resp.Code()
	}
	if c := do("/rd", "ep="+strings.Repeat("x", 10*1024)); c != codes.BadRequest {
		t.Fatalf("10 KB ep: %v, want 4.00", c)
	}
	if c := do("/rd/never-existed"); c != codes.NotFound {
		t.Fatalf("update of unknown location: %v, want 4.04 (L2, issue 9.2)", c)
	}
	// A truncated option: the header announces a 5-byte Uri-Path, the
	// datagram ends after 2. Sent by a raw DTLS client of the same identity
	// would replace the session, so use a third key.
	raw := testKey("raw", 3)
	raw.Endpoint = "urn:dev:raw"
	store.put(raw)
	conn, err := (client{id: raw.Identity, key: raw.Secret}).dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := srv.Stats().Refused["CoAP"]
	if _, err := conn.Write([]byte{0x40, 0x01, 0x12, 0x34, 0xb5, 'a', 'b'}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return srv.Stats().Refused["CoAP"] == before+1 }, "truncated option counted")
	// Register flood: after the burst, 4.29 from the gateway itself.
	var limited int
	for i := 0; i < 20; i++ {
		if c := do("/rd", "ep=urn:dev:bad", "lt=300"); c == codes.TooManyRequests {
			limited++
		}
	}
	if limited < 10 {
		t.Fatalf("only %d of 20 flooding Registers limited", limited)
	}
	st := srv.Stats()
	if st.Refused["rate"] != uint64(limited) || st.Refused["L2"] < 1 || st.Refused["CoAP"] < 1 {
		t.Fatalf("refusals not counted: %v", st.Refused)
	}
	registers := 0
	for _, r := range backend.Received() {
		if r.Path == "/rd" {
			registers++
		}
	}
	if registers > 1+registerBurst {
		t.Fatalf("backend received %d Registers", registers)
	}
	// The other device is unaffected.
	if err := dg.Update(ctx); err != nil {
		t.Fatalf("good device: %v", err)
	}
	if v, err := backend.Read(ctx, good.Endpoint, "/3/0/0"); err != nil || len(v) == 0 {
		t.Fatalf("good device read: %v", err)
	}
}
