package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
)

// fleetKey is one entry of the test key file.
type fleetKey struct {
	identity, endpoint, extra string
	key                       []byte
}

func newFleetKey(identity, extra string) fleetKey {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return fleetKey{identity: identity, endpoint: "urn:dev:" + identity, extra: extra, key: k}
}

func keysFile(keys ...fleetKey) string {
	var b strings.Builder
	b.WriteString("keys:\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "  - identity: %q\n    key_hex: %q\n    endpoint: %q\n", k.identity, hex.EncodeToString(k.key), k.endpoint)
		if k.extra != "" {
			b.WriteString("    " + k.extra + "\n")
		}
	}
	return b.String()
}

func gatewayConfig(backend net.Addr) string {
	return fmt.Sprintf(`
listeners: [{address: "127.0.0.1:0"}]
backends: {dm: {address: %q}}
store: {path: keys.yaml}
sessions: {drain_timeout: 3s}
`, backend.String())
}

// TestDevicesEndToEnd: simulated LwM2M devices talk through the real binary
// to the test backend: Register, Update, a backend-initiated Read, Observe
// and Notify, De-register, over DTLS 1.3 psk_dhe_ke, DTLS 1.3 psk_ke (the key
// allows it) and DTLS 1.2 CCM_8 (legacy key).
func TestDevicesEndToEnd(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	dhe := newFleetKey("dev-dhe", "")
	ke := newFleetKey("dev-ke", "modes: [psk_dhe_ke, psk_ke]")
	v12 := newFleetKey("dev-12", "legacy: true")
	g := startGateway(t, gatewayConfig(backend.Addr()), keysFile(dhe, ke, v12))

	cases := []struct {
		key     fleetKey
		version string
		mode    string
		suite   ciphersuite.ID
		logMode string
	}{
		{dhe, "1.3", devsim.ModePSKDHE, 0, "psk_dhe_ke"},
		{ke, "1.3", devsim.ModePSK, 0, "psk_ke"},
		{v12, "1.2", "", ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, "psk"},
	}
	for _, tc := range cases {
		t.Run(tc.key.identity, func(t *testing.T) {
			ctx := ctxTimeout(t, 30*time.Second)
			cfg := devsim.DeviceConfig{
				Server: g.addr.String(), Identity: []byte(tc.key.identity), Key: tc.key.key,
				Version: tc.version, Mode: tc.mode, Endpoint: tc.key.endpoint, Lifetime: time.Hour,
			}
			if tc.suite != 0 {
				cfg.CipherSuites = []ciphersuite.ID{tc.suite}
			}
			d, err := devsim.Dial(ctx, cfg)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer d.Close()
			loc, err := d.Register(ctx)
			if err != nil {
				t.Fatalf("register: %v", err)
			}
			reg, err := backend.WaitRegistration(ctx, tc.key.endpoint)
			if err != nil {
				t.Fatal(err)
			}
			if reg.Location != loc || reg.Lifetime != time.Hour || reg.Version != "1.1" || reg.Binding != "U" {
				t.Fatalf("backend registration %+v, device location %q", reg, loc)
			}
			if err := d.Update(ctx); err != nil {
				t.Fatalf("update: %v", err)
			}
			v, err := backend.Read(ctx, tc.key.endpoint, "/3/0/0")
			if err != nil || len(v) == 0 {
				t.Fatalf("backend read /3/0/0: %q, %v", v, err)
			}
			notes, err := backend.Observe(ctx, tc.key.endpoint, "/3/0/9")
			if err != nil {
				t.Fatalf("observe: %v", err)
			}
			if err := d.Notify(ctx, []byte("77")); err != nil {
				t.Fatalf("notify: %v", err)
			}
			select {
			case p := <-notes:
				if !bytes.Equal(p, []byte("77")) {
					t.Fatalf("notify payload %q", p)
				}
			case <-ctx.Done():
				t.Fatal("notification never reached the backend")
			}
			if err := d.Deregister(ctx); err != nil {
				t.Fatalf("deregister: %v", err)
			}
			g.waitLog(t, "session established", map[string]string{"mode": tc.logMode})
		})
	}
}

// TestR3PSKKEOnlyRefused: a device offering only psk_ke with a key that does
// not allow it completes no handshake, and nothing reaches the backend.
func TestR3PSKKEOnlyRefused(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	k := newFleetKey("dev-dhe-only", "")
	g := startGateway(t, gatewayConfig(backend.Addr()), keysFile(k))
	ctx := ctxTimeout(t, 20*time.Second)
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: g.addr.String(), Identity: []byte(k.identity), Key: k.key,
		Mode: devsim.ModePSK, Endpoint: k.endpoint, HandshakeTimeout: 3 * time.Second, MaxRetransmit: -1, ACKTimeout: time.Second})
	if err == nil {
		// DTLS 1.3: the client may send Finished before the alert arrives.
		defer d.Close()
		if _, rerr := d.Register(ctx); rerr == nil {
			t.Fatal("psk_ke-only device registered")
		}
	}
	g.waitLog(t, "handshake failed", map[string]string{"reason": "policy_R3"})
	if n := len(backend.Received()); n != 0 {
		t.Fatalf("backend received %d messages from a refused device", n)
	}
}

// TestGarbageFloodWhileDeviceWorks: 10,000 random, truncated and oversized
// datagrams from another socket while a device keeps exchanging messages:
// the device sees no error and the gateway stays up.
func TestGarbageFloodWhileDeviceWorks(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	k := newFleetKey("dev-flood", "")
	g := startGateway(t, gatewayConfig(backend.Addr()), keysFile(k))
	ctx := ctxTimeout(t, 60*time.Second)
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: g.addr.String(), Identity: []byte(k.identity), Key: k.key, Endpoint: k.endpoint})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Register(ctx); err != nil {
		t.Fatal(err)
	}
	attacker, err := net.DialUDP("udp", nil, g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 70000)
		for i := range 10000 {
			n := []int{0, 1, 12, 13, 40, 300, 1500, 65000}[i%8]
			_, _ = rand.Read(buf[:n])
			if i%3 == 0 && n > 25 { // a plausible DTLS 1.2 ClientHello header over garbage
				copy(buf, []byte{22, 0xfe, 0xfd, 0, 0})
				buf[13] = 1
			}
			_, _ = attacker.Write(buf[:n])
		}
	}()
	errs := 0
	for i := 0; i < 20; i++ {
		if err := d.Update(ctx); err != nil {
			errs++
			t.Errorf("update %d during flood: %v", i, err)
		}
		if _, err := backend.Read(ctx, k.endpoint, "/3/0/0"); err != nil {
			errs++
			t.Errorf("read %d during flood: %v", i, err)
		}
	}
	wg.Wait()
	if err := d.Update(ctx); err != nil {
		t.Fatalf("update after flood: %v", err)
	}
	select {
	case err := <-g.exit:
		t.Fatalf("gateway exited during the flood: %v", err)
	default:
	}
}

// TestSIGTERMExitsCleanly: the real binary gets SIGTERM with a live session,
// sends close_notify, closes the upstream socket and exits 0 within 5 s.
func TestSIGTERMExitsCleanly(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	k := newFleetKey("dev-term", "")
	g := startGateway(t, gatewayConfig(backend.Addr()), keysFile(k))
	ctx := ctxTimeout(t, 20*time.Second)
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: g.addr.String(), Identity: []byte(k.identity), Key: k.key,
		Endpoint: k.endpoint, ACKTimeout: 500 * time.Millisecond, MaxRetransmit: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Register(ctx); err != nil {
		t.Fatal(err)
	}
	err, took := g.terminate(t)
	if err != nil {
		t.Fatalf("exit: %v; logs %v", err, g.logLines())
	}
	if took > 5*time.Second {
		t.Fatalf("took %s to exit", took)
	}
	g.waitLog(t, "session closed", map[string]string{"reason": "shutdown"})
	// The device's session is gone: its next request fails.
	if err := d.Update(ctx); err == nil {
		t.Fatal("update succeeded after the gateway exited")
	}
}

// TestDemoCommand runs the README's demo command for a few seconds.
func TestDemoCommand(t *testing.T) {
	out, err := exec.Command(gatewayBin, "demo", "--devices", "5", "--duration", "4s").CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"registered   urn:dev:demo-001", "registered   urn:dev:demo-005", "deregistered", "handshakes ok 5 / failed 0"} {
		if !strings.Contains(s, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, s)
		}
	}
}
