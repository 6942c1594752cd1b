package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminEndpointsAndSIGHUPReload: the admin listener serves health,
// readiness, Prometheus metrics without identities (R9) and the live
// registrations; SIGHUP with a broken file keeps the running configuration,
// with a valid one changes the log level; the device's session survives both.
func TestAdminEndpointsAndSIGHUPReload(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	k := newFleetKey("admin-dev", "")
	cfg := gatewayConfig(backend.Addr()) + "admin: {address: \"127.0.0.1:0\"}\n"
	g := startGateway(t, cfg, keysFile(k))
	admin := fmt.Sprint(g.waitLog(t, "admin listening", nil)["addr"])
	base := "http://" + admin

	ctx := ctxTimeout(t, 30*time.Second)
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: g.addr.String(), Identity: []byte(k.identity), Key: k.key, Endpoint: k.endpoint})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Register(ctx); err != nil {
		t.Fatal(err)
	}

	if code, body := httpGet(t, base+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	code, metrics := httpGet(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`gateway_handshakes_total{mode="psk_dhe_ke",result="ok",version="dtls1.3"} 1`,
		`gateway_sessions{state="established"} 1`,
		`gateway_datagrams_total{backend="dm",direction="to_backend"}`,
		`gateway_store_lookup_seconds_bucket`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(metrics, k.identity) || strings.Contains(metrics, k.endpoint) {
		t.Fatal("R9: /metrics carries an identity or endpoint")
	}
	_, regs := httpGet(t, base+"/registrations")
	var view struct {
		Count         int `json:"count"`
		Registrations []struct {
			Endpoint, IdentityTag, Location string
		} `json:"registrations"`
	}
	if err := json.Unmarshal([]byte(regs), &view); err != nil || view.Count != 1 || view.Registrations[0].Endpoint != k.endpoint {
		t.Fatalf("/registrations: %s (%v)", regs, err)
	}
	if strings.Contains(regs, `"`+k.identity+`"`) { // the endpoint urn:dev:<identity> may appear; the identity itself not
		t.Fatal("R9: /registrations shows a raw identity")
	}

	// SIGHUP with a broken file: refused, the gateway keeps running.
	good, err := os.ReadFile(g.configPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.configPath, []byte("listeners: [{address: 1}]\nnonsense: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = g.cmd.Process.Signal(syscall.SIGHUP)
	g.waitLog(t, "reload refused: invalid configuration, the running one stays", nil)
	// A valid file with another log level.
	debug := bytes.Replace(good, []byte("log: {"), []byte("log: {level: debug, "), 1)
	if bytes.Equal(debug, good) {
		debug = append(good, "log: {level: debug}\n"...)
	}
	if err := os.WriteFile(g.configPath, debug, 0o600); err != nil {
		t.Fatal(err)
	}
	_ = g.cmd.Process.Signal(syscall.SIGHUP)
	g.waitLog(t, "log level changed", map[string]string{"level": "debug"})
	g.waitLog(t, "configuration reloaded", nil)
	if err := d.Update(ctx); err != nil {
		t.Fatalf("session did not survive the reloads: %v", err)
	}
}
