package integration

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// restartSite is a gateway configuration on a fixed UDP port, so a
// restarted process listens where the devices send.
type restartSite struct {
	dir, config string
	port        int
}

func newRestartSite(t *testing.T, backend net.Addr, snapshot bool, keys ...fleetKey) *restartSite {
	t.Helper()
	s := &restartSite{dir: t.TempDir(), port: freeUDPPort(t)}
	if err := os.WriteFile(filepath.Join(s.dir, "keys.yaml"), []byte(keysFile(keys...)), 0o600); err != nil {
		t.Fatal(err)
	}
	sessions := "drain_timeout: 3s"
	store := "path: keys.yaml"
	if snapshot {
		kek := make([]byte, 32)
		_, _ = rand.Read(kek)
		if err := os.WriteFile(filepath.Join(s.dir, "kek"), []byte(hex.EncodeToString(kek)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		store += ", kek_file: kek, insecure_plaintext_keys: true"
		sessions += ", snapshot: sessions.snap, checkpoint_interval: 1s"
	}
	cfg := fmt.Sprintf(`
listeners: [{address: "127.0.0.1:%d"}]
backends: {dm: {address: %q}}
store: {%s}
sessions: {%s}
admin: {address: "127.0.0.1:0"}
`, s.port, backend.String(), store, sessions)
	s.config = filepath.Join(s.dir, "gateway.yaml")
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *restartSite) start(t *testing.T) *gatewayProc {
	t.Helper()
	g, err := runGateway(t, s.config, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// metric sums a Prometheus counter's samples whose labels contain every
// fragment of want (e.g. `result="ok"`).
func (g *gatewayProc) metric(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	admin := fmt.Sprint(g.waitLog(t, "admin listening", nil)["addr"])
	_, body := httpGet(t, "http://"+admin+"/metrics")
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if f := strings.Fields(line); ok && len(f) == 2 {
			v, _ := strconv.ParseFloat(f[1], 64)
			sum += v
		}
	}
	return sum
}

// kill sends SIGKILL and waits for the exit.
func (g *gatewayProc) kill(t *testing.T) {
	t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-g.exit
	g.exit <- err
}

// TestRestartContinuesSessions (issue 11): registered LwM2M devices, DTLS
// 1.3 and 1.2, keep their DTLS sessions across a graceful restart (SIGTERM:
// handoff) and across a crash (SIGKILL, restored from the last checkpoint):
// the new process runs no handshake, every device's Update is answered (no
// 4.03, no re-registration), and a backend Read reaches the device through
// its old upstream address (L3). The time from the old process's exit to
// the first answered request is logged.
func TestRestartContinuesSessions(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	const n = 12
	var keys []fleetKey
	for i := range n {
		extra := ""
		if i%3 == 2 {
			extra = "legacy: true"
		}
		keys = append(keys, newFleetKey(fmt.Sprintf("restart-%02d", i), extra))
	}
	site := newRestartSite(t, backend.Addr(), true, keys...)
	g := site.start(t)
	ctx := ctxTimeout(t, 90*time.Second)
	devs := make([]*devsim.Device, n)
	for i, k := range keys {
		cfg := devsim.DeviceConfig{Server: g.addr.String(), Identity: []byte(k.identity), Key: k.key,
			Endpoint: k.endpoint, Lifetime: time.Hour, ACKTimeout: time.Second, MaxRetransmit: 4}
		if i%3 == 2 {
			cfg.Version, cfg.CipherSuites = "1.2", []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM_8}
		}
		d, err := devsim.Dial(ctx, cfg)
		if err != nil {
			t.Fatalf("%s: %v", k.identity, err)
		}
		defer d.Close()
		if _, err := d.Register(ctx); err != nil {
			t.Fatalf("%s register: %v", k.identity, err)
		}
		devs[i] = d
	}
	updateAll := func(t *testing.T, when string) time.Time {
		t.Helper()
		var first time.Time
		var once sync.Once
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, d := range devs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = d.Update(ctx)
				if errs[i] == nil {
					once.Do(func() { first = time.Now() })
				}
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s: device %s: update: %v", when, keys[i].identity, err)
			}
		}
		for _, k := range keys[:2] {
			if v, err := backend.Read(ctx, k.endpoint, "/3/0/0"); err != nil || len(v) == 0 {
				t.Fatalf("%s: backend read of %s: %q, %v", when, k.endpoint, v, err)
			}
		}
		return first
	}
	updateAll(t, "before restart")
	if hs := g.metric(t, "gateway_handshakes_total", `result="ok"`); hs != n {
		t.Fatalf("first process: %v handshakes, want %d", hs, n)
	}

	// SIGTERM: the sessions are handed off, the devices are told nothing.
	if err, took := g.terminate(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v (%s)", err, took)
	}
	exited := time.Now()
	g2 := site.start(t)
	first := updateAll(t, "after SIGTERM")
	t.Logf("SIGTERM restart: first answered request %s after the old process exited", first.Sub(exited))
	if hs := g2.metric(t, "gateway_handshakes_total", `result="ok"`); hs != 0 {
		t.Fatalf("after SIGTERM the new process ran %v handshakes, want 0", hs)
	}
	if r := g2.metric(t, "gateway_session_snapshots_total", `event="restored"`); r != n {
		t.Fatalf("restored %v sessions, want %d", r, n)
	}
	admin := fmt.Sprint(g2.waitLog(t, "admin listening", nil)["addr"])
	if code, body := httpGet(t, "http://"+admin+"/sessions"); code != 200 || !strings.Contains(body, fmt.Sprintf(`"restored":%d`, n)) ||
		strings.Contains(body, `"identity":`) {
		t.Fatalf("/sessions after the restart: %d %s", code, body)
	}
	if code, _ := httpGet(t, "http://"+admin+"/readyz"); code != 200 {
		t.Fatalf("/readyz after the restore: %d", code)
	}

	// SIGKILL after a checkpoint: restored from it, still no handshake.
	g2.waitLog(t, "sessions restored", nil)
	deadline := time.Now().Add(20 * time.Second)
	for g2.metric(t, "gateway_session_snapshots_total", `event="written"`) < 2*n && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond) // a checkpoint after the updates (checkpoint_interval 1s)
	}
	g2.kill(t)
	g3 := site.start(t)
	updateAll(t, "after SIGKILL")
	if hs := g3.metric(t, "gateway_handshakes_total", `result="ok"`); hs != 0 {
		t.Fatalf("after SIGKILL the new process ran %v handshakes, want 0", hs)
	}
}

// TestRegistrationSurvivesRestart (issue 9.2, L2): without session
// snapshots a restart ends the DTLS sessions, but the identity's
// registration is kept next to the key store: the device handshakes again
// and its Update to the location it registered before is forwarded (no
// 4.03, no re-registration). Another identity still cannot update it.
func TestRegistrationSurvivesRestart(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	a, b := newFleetKey("reg-a", ""), newFleetKey("reg-b", "")
	site := newRestartSite(t, backend.Addr(), false, a, b)
	g := site.start(t)
	ctx := ctxTimeout(t, 60*time.Second)
	dial := func(k fleetKey) *devsim.Device {
		d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: g.addr.String(), Identity: []byte(k.identity), Key: k.key,
			Endpoint: k.endpoint, Lifetime: time.Hour, ACKTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}
	da := dial(a)
	loc, err := da.Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	registers := len(backend.Received())
	if err, _ := g.terminate(t); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(site.dir, "registrations.json")); err != nil {
		t.Fatalf("registration not kept next to the key store: %v", err)
	}
	site.start(t)
	// The device's session ended with the old process; it handshakes again
	// and updates its registration.
	if err := da.Reconnect(ctx); err != nil {
		t.Fatalf("reconnect after restart: %v", err)
	}
	if got := da.Location(); got != loc {
		t.Fatalf("device re-registered at %q, want its update of %q", got, loc)
	}
	var sawRegister bool
	for _, r := range backend.Received()[registers:] {
		sawRegister = sawRegister || (r.Path == "/rd" && r.Code == codes.POST)
	}
	if sawRegister {
		t.Fatal("the device had to re-register after the restart")
	}
	db := dial(b)
	db.SetLocation(loc)
	if err := db.Update(ctx); err == nil || !strings.Contains(err.Error(), "4.03") {
		t.Fatalf("another identity's update of %s: %v, want 4.03 Forbidden", loc, err)
	}
}
