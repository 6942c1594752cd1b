package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// pskSite is a gateway configuration, key file and identity-tag key in one
// directory, so the tests can run `gateway psk … --config` against the
// configuration the running gateway uses.
type pskSite struct {
	dir, config string
	tagger      *pskstore.Tagger
	env         []string // extra environment of the gateway and the CLI
}

func newPskSite(t *testing.T, backend net.Addr, storeExtra, keysYAML string, env ...string) *pskSite {
	t.Helper()
	s := &pskSite{dir: t.TempDir(), env: env}
	s.config = filepath.Join(s.dir, "gateway.yaml")
	tagKey := []byte("integration-tag-key-0123456789")
	s.tagger = pskstore.NewTagger(tagKey)
	for name, data := range map[string]string{
		"tag.key":   string(tagKey),
		"keys.yaml": keysYAML,
		"gateway.yaml": fmt.Sprintf(`
listeners: [{address: "127.0.0.1:0"}]
backends: {dm: {address: %q}}
store:
  path: keys.yaml
  tag_key_file: tag.key
%s
sessions: {drain_timeout: 3s}
%s
`, backend.String(), storeExtra, freeAdmin(storeExtra)),
	} {
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// freeAdmin gives a gateway a free admin port unless its configuration sets
// one: the default is a fixed port and tests run several gateways at once.
func freeAdmin(config string) string {
	if strings.Contains(config, "admin:") {
		return ""
	}
	return `admin: {address: "127.0.0.1:0"}`
}

// start runs `gateway serve` on the site's configuration.
func (s *pskSite) start(t *testing.T) *gatewayProc {
	t.Helper()
	g, err := s.tryStart(t)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// tryStart is start returning why the gateway did not come up.
func (s *pskSite) tryStart(t *testing.T) (*gatewayProc, error) {
	t.Helper()
	return runGateway(t, s.config, s.env)
}

// psk runs `gateway psk <args> --config <site config>` and returns its
// output; it fails the test unless the exit status is want.
func (s *pskSite) psk(t *testing.T, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(gatewayBin, append(append([]string{"psk"}, args...), "--config", s.config)...)
	cmd.Env = append(os.Environ(), s.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != want {
		t.Fatalf("gateway psk %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

var printedKey = regexp.MustCompile(`(?m)^key_hex +([0-9a-f]+)$`)

func keyFrom(t *testing.T, stdout string) []byte {
	t.Helper()
	m := printedKey.FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no key printed:\n%s", stdout)
	}
	k, _ := hex.DecodeString(m[1])
	return k
}

// dialRegistered connects a device with a short CoAP retransmission budget,
// so a request on a closed session fails quickly, and registers it.
func dialRegistered(t *testing.T, ctx context.Context, g *gatewayProc, identity string, key []byte) *devsim.Device {
	t.Helper()
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: g.addr.String(), Identity: []byte(identity), Key: key,
		Endpoint: "urn:dev:" + identity, ACKTimeout: 300 * time.Millisecond, MaxRetransmit: 1, HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("%s: handshake: %v", identity, err)
	}
	t.Cleanup(func() { d.Close() })
	if _, err := d.Register(ctx); err != nil {
		t.Fatalf("%s: register: %v", identity, err)
	}
	return d
}

// waitClosed waits for the gateway to log that identity's session closed
// for reason, and returns how long that took from start.
func waitClosed(t *testing.T, g *gatewayProc, s *pskSite, identity, reason string, start time.Time) time.Duration {
	t.Helper()
	l := g.waitLog(t, "session closed", map[string]string{"reason": reason, "identity_tag": s.tagger.Tag([]byte(identity))})
	took := time.Since(start)
	t.Logf("%v after the command: %v", took, l)
	return took
}

// checkLogsHoldNoKey fails if any gateway log line shows one of keys (R9).
func checkLogsHoldNoKey(t *testing.T, g *gatewayProc, keys ...[]byte) {
	t.Helper()
	logs := fmt.Sprint(g.logLines())
	for _, k := range keys {
		if strings.Contains(logs, hex.EncodeToString(k)) || strings.Contains(logs, string(k)) {
			t.Fatal("a gateway log line shows a key")
		}
	}
}

// twoDeviceSite runs a file-store gateway with two identities and a
// registered simulated device for each: the setup of the R10 CLI tests.
func twoDeviceSite(t *testing.T, id1, id2 string) (*devsim.Backend, fleetKey, fleetKey, *pskSite, *gatewayProc, context.Context, *devsim.Device, *devsim.Device) {
	t.Helper()
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = backend.Close() })
	k1, k2 := newFleetKey(id1, ""), newFleetKey(id2, "")
	s := newPskSite(t, backend.Addr(), "", keysFile(k1, k2))
	g := s.start(t)
	ctx := ctxTimeout(t, 60*time.Second)
	return backend, k1, k2, s, g, ctx, dialRegistered(t, ctx, g, k1.identity, k1.key), dialRegistered(t, ctx, g, k2.identity, k2.key)
}

// TestPskRevokeClosesLiveSessionR10: `gateway psk revoke` against the
// running gateway's configuration closes that identity's session within
// 2 s, through the file watcher, and leaves the other identity's alone.
func TestPskRevokeClosesLiveSessionR10(t *testing.T) {
	backend, k1, k2, s, g, ctx, d1, d2 := twoDeviceSite(t, "dev-revoked", "dev-kept")

	start := time.Now()
	_, stderr := s.psk(t, 0, "revoke", k1.identity)
	if !strings.Contains(stderr, `revoked identity "dev-revoked"`) {
		t.Errorf("revoke said:\n%s", stderr)
	}
	if took := waitClosed(t, g, s, k1.identity, "revoked", start); took > 2*time.Second {
		t.Errorf("session closed %v after the revoke, want within 2s", took)
	}
	if err := d1.Update(ctx); err == nil {
		t.Fatal("the revoked device's Update succeeded")
	}
	for i := range 3 {
		if err := d2.Update(ctx); err != nil {
			t.Fatalf("the other device's Update %d: %v", i, err)
		}
	}
	if _, err := backend.Read(ctx, k2.endpoint, "/3/0/0"); err != nil {
		t.Fatalf("backend read of the other device: %v", err)
	}
	// The revoked identity cannot come back.
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if d, err := devsim.Dial(hctx, devsim.DeviceConfig{Server: g.addr.String(), Identity: []byte(k1.identity), Key: k1.key,
		Endpoint: k1.endpoint, HandshakeTimeout: 3 * time.Second, ACKTimeout: 300 * time.Millisecond, MaxRetransmit: -1}); err == nil {
		defer d.Close()
		if _, err := d.Register(hctx); err == nil {
			t.Fatal("a revoked identity registered again")
		}
	}
	for _, l := range g.logLines() {
		if l["msg"] == "session closed" && l["identity_tag"] == s.tagger.Tag([]byte(k2.identity)) {
			t.Fatalf("the other identity's session was closed: %v", l)
		}
	}
	checkLogsHoldNoKey(t, g, k1.key, k2.key)
}

// TestPskRotateClosesLiveSessionR10: `gateway psk rotate` closes the rotated
// identity's session within 2 s; the device reconnects with the printed new
// key, the old key no longer works, and the other identity is untouched.
func TestPskRotateClosesLiveSessionR10(t *testing.T) {
	_, k1, k2, s, g, ctx, d1, d2 := twoDeviceSite(t, "dev-rotated", "dev-steady")

	start := time.Now()
	stdout, stderr := s.psk(t, 0, "rotate", k1.identity)
	newKey := keyFrom(t, stdout)
	if len(newKey) != 32 || bytes.Equal(newKey, k1.key) {
		t.Fatal("rotate printed no new key")
	}
	if strings.Contains(stderr, hex.EncodeToString(newKey)) {
		t.Fatal("rotate shows the key on stderr")
	}
	if took := waitClosed(t, g, s, k1.identity, "rotated", start); took > 2*time.Second {
		t.Errorf("session closed %v after the rotation, want within 2s", took)
	}
	if err := d1.Update(ctx); err == nil {
		t.Fatal("Update on the session of the old key succeeded")
	}
	d1.Close()
	again := dialRegistered(t, ctx, g, k1.identity, newKey)
	if err := again.Update(ctx); err != nil {
		t.Fatalf("update with the new key: %v", err)
	}
	if err := d2.Update(ctx); err != nil {
		t.Fatalf("the other device's Update: %v", err)
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if d, err := devsim.Dial(hctx, devsim.DeviceConfig{Server: g.addr.String(), Identity: []byte(k1.identity), Key: k1.key,
		Endpoint: k1.endpoint, HandshakeTimeout: 3 * time.Second, ACKTimeout: 300 * time.Millisecond, MaxRetransmit: -1}); err == nil {
		defer d.Close()
		if _, err := d.Register(hctx); err == nil {
			t.Fatal("the old key still works after rotation")
		}
	}
	checkLogsHoldNoKey(t, g, k1.key, k2.key, newKey)
}

// TestPskSealedKeyFileEndToEnd: keys sealed at rest under a KEK from an
// environment variable: the CLI provisions into the sealed file, the
// gateway serves it, a device registers; without the KEK, or with another
// one, the gateway refuses to start and says why, naming the entry.
func TestPskSealedKeyFileEndToEnd(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	kek := randomKEK(t)
	s := newPskSite(t, backend.Addr(), "  kek_env: TEST_GATEWAY_KEK", "keys: []\n", "TEST_GATEWAY_KEK="+kek)

	stdout, _ := s.psk(t, 0, "gen", "--identity", "dev-sealed", "--endpoint", "urn:dev:dev-sealed")
	key := keyFrom(t, stdout)
	data, err := os.ReadFile(filepath.Join(s.dir, "keys.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte("key_sealed:")) || bytes.Contains(data, []byte("key_hex")) || bytes.Contains(data, []byte(hex.EncodeToString(key))) {
		t.Fatalf("the key file is not sealed:\n%s", data)
	}
	g := s.start(t)
	ctx := ctxTimeout(t, 30*time.Second)
	d := dialRegistered(t, ctx, g, "dev-sealed", key)
	if err := d.Update(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.WaitRegistration(ctx, "urn:dev:dev-sealed"); err != nil {
		t.Fatal(err)
	}
	// A second identity provisioned while the gateway runs is picked up.
	stdout, _ = s.psk(t, 0, "gen", "--identity", "dev-sealed-2", "--endpoint", "urn:dev:dev-sealed-2")
	key2 := keyFrom(t, stdout)
	g.waitLog(t, "psk store: reloaded", map[string]string{"added": "1"})
	dialRegistered(t, ctx, g, "dev-sealed-2", key2)
	checkLogsHoldNoKey(t, g, key, key2)

	for _, tt := range []struct {
		name string
		env  []string
		want string
	}{
		{"kek variable unset", nil, "TEST_GATEWAY_KEK"},
		{"another kek", []string{"TEST_GATEWAY_KEK=" + randomKEK(t)}, "keys.yaml:4: keys[0].key_sealed: sealed: wrong key-encryption key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			other := *s
			other.env = tt.env
			if tt.env == nil {
				other.env = []string{"TEST_GATEWAY_KEK="}
			}
			_, err := other.tryStart(t)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("start: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func randomKEK(t *testing.T) string {
	t.Helper()
	for {
		m := make([]byte, sealed.KEKSize)
		_, _ = rand.Read(m)
		if _, err := sealed.NewKEK(m); err == nil {
			return hex.EncodeToString(m)
		}
	}
}
