package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsCarryNoIdentity (R9): the exported metrics count handshakes,
// traffic and refusals, and no label value is an identity or endpoint.
func TestMetricsCarryNoIdentity(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("secret-identity-42", 1)
	k.Endpoint = "urn:dev:secret-endpoint"
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(srv.Collector()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn := (client{id: k.Identity, key: k.Secret}).mustDial(t, addr)
	roundTrip(t, conn, []byte("counted"))
	if _, err := (client{id: []byte("nobody"), key: k.Secret}).dial(ctx, addr); err == nil {
		t.Fatal("unknown identity accepted")
	}
	waitFor(t, func() bool { return srv.Stats().HandshakesFailed["unknown_identity"] == 1 }, "failure counted")

	want := `
# HELP gateway_datagrams_total Datagrams forwarded, by direction (to_backend, to_device) and backend.
# TYPE gateway_datagrams_total counter
gateway_datagrams_total{backend="dm",direction="to_backend"} 1
gateway_datagrams_total{backend="dm",direction="to_device"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gateway_datagrams_total"); err != nil {
		t.Fatal(err)
	}
	// One ok series plus every known failure reason, exported from zero.
	if n := testutil.CollectAndCount(srv.Collector(), "gateway_handshakes_total"); n != 1+len(failureReasons) {
		t.Fatalf("handshake series: %d, want %d", n, 1+len(failureReasons))
	}
	if v := testutil.ToFloat64(onlySeries(t, reg, "gateway_handshakes_total", "unknown_identity")); v != 1 {
		t.Fatalf("unknown_identity failures: %v", v)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "secret") || strings.Contains(l.GetValue(), "nobody") {
					t.Fatalf("R9: metric %s label %s=%q", f.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// onlySeries returns a collector of the single series of name whose result
// label is result.
func onlySeries(t *testing.T, reg *prometheus.Registry, name, result string) prometheus.Collector {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "probe", Help: "probe"}, func() float64 { return m.GetCounter().GetValue() })
				}
			}
		}
	}
	t.Fatalf("no %s series with result %q", name, result)
	return nil
}
