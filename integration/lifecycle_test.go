package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Issue 9: what real devices do over their life — reboot, re-handshake when
// idle, outlive a gateway restart — against the real binary.

// logMatches reports whether a log line has msg and contains want's values.
func logMatches(l map[string]any, msg string, want map[string]string) bool {
	if l["msg"] != msg {
		return false
	}
	for k, v := range want {
		if !strings.Contains(fmt.Sprint(l[k]), v) {
			return false
		}
	}
	return true
}

// logIndexes returns the positions of the log lines that match.
func (g *gatewayProc) logIndexes(msg string, want map[string]string) []int {
	var out []int
	for i, l := range g.logLines() {
		if logMatches(l, msg, want) {
			out = append(out, i)
		}
	}
	return out
}

// waitLogs waits for n log lines that match and returns their positions.
func (g *gatewayProc) waitLogs(t *testing.T, n int, msg string, want map[string]string) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if idx := g.logIndexes(msg, want); len(idx) >= n {
			return idx
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d log lines %q with %v, want %d; logs: %v", len(g.logIndexes(msg, want)), msg, want, n, g.logLines())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// replacedAfterEstablished checks in the gateway's logs that the identity's
// old session was closed as replaced only after its new session was
// established (issue 9.1: never at the ClientHello).
func replacedAfterEstablished(t *testing.T, g *gatewayProc) {
	t.Helper()
	established := g.waitLogs(t, 2, "session established", nil)
	replaced := g.waitLogs(t, 1, "session closed", map[string]string{"reason": "replaced by a new session"})
	if replaced[0] < established[1] {
		t.Fatalf("the old session closed (log line %d) before the new one was established (line %d)", replaced[0], established[1])
	}
}

// lifecycleDevice dials a device with short CoAP and handshake budgets, so
// a gateway that locks it out fails the test in seconds.
func lifecycleDevice(t *testing.T, g *gatewayProc, k fleetKey, version string, tweak func(*devsim.DeviceConfig)) *devsim.Device {
	t.Helper()
	cfg := devsim.DeviceConfig{Server: g.addr.String(), Identity: []byte(k.identity), Key: k.key, Endpoint: k.endpoint,
		Version: version, HandshakeTimeout: 5 * time.Second, ACKTimeout: 500 * time.Millisecond, MaxRetransmit: 3}
	if tweak != nil {
		tweak(&cfg)
	}
	d, err := devsim.Dial(ctxTimeout(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatalf("%s: handshake: %v", k.identity, err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// registersAt counts the Registers a backend received.
func registersAt(b *devsim.Backend) int {
	n := 0
	for _, r := range b.Received() {
		if r.Path == "/rd" && r.Code == codes.POST {
			n++
		}
	}
	return n
}

// TestRebootFromSamePort (issue 9.1): a device that reboots handshakes
// again from the same address and port and registers again at once, over
// DTLS 1.3 and 1.2; the gateway closes the old session only after the new
// one is established. The old binary routed the new ClientHello to the old
// session and dropped it, so the device was locked out until the idle
// timeout (75 min).
func TestRebootFromSamePort(t *testing.T) {
	for _, v := range []struct{ name, version, extra string }{{"dtls1.3", "1.3", ""}, {"dtls1.2", "1.2", "legacy: true"}} {
		t.Run(v.name, func(t *testing.T) {
			backend, err := devsim.NewBackend("127.0.0.1:0", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer backend.Close()
			k := newFleetKey("rebooter", v.extra)
			g := startGateway(t, gatewayConfig(backend.Addr()), keysFile(k))
			ctx := ctxTimeout(t, 30*time.Second)
			d := lifecycleDevice(t, g, k, v.version, nil)
			first, err := d.Register(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Reboot(ctx); err != nil {
				t.Fatalf("reboot from %v: %v", d.LocalAddr(), err)
			}
			reg, err := backend.WaitRegistration(ctx, k.endpoint)
			if err != nil || reg.Location == first || reg.Location != d.Location() || registersAt(backend) != 2 {
				t.Fatalf("registration after the reboot %+v (%v), first location %s, %d Registers", reg, err, first, registersAt(backend))
			}
			if err := d.Update(ctx); err != nil {
				t.Fatalf("update after the reboot: %v", err)
			}
			if v, err := backend.Read(ctx, k.endpoint, "/3/0/0"); err != nil || len(v) == 0 {
				t.Fatalf("backend read after the reboot: %q, %v", v, err)
			}
			replacedAfterEstablished(t, g)
		})
	}
}

// TestIdleRehandshakeUpdatesOldLocation (issue 9.2, L2): a device that
// re-handshakes from the same port after being idle (a tinydtls-based
// client's NAT heuristic), over DTLS 1.3 and 1.2, sends its Update to the
// registration it created: forwarded, no 4.03, no second Register. The old
// binary answered 4.03 and the client fell back to bootstrap.
func TestIdleRehandshakeUpdatesOldLocation(t *testing.T) {
	for _, v := range []struct{ name, version, extra string }{{"dtls1.3", "1.3", ""}, {"dtls1.2", "1.2", "legacy: true"}} {
		t.Run(v.name, func(t *testing.T) {
			backend, err := devsim.NewBackend("127.0.0.1:0", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer backend.Close()
			k := newFleetKey("idler", v.extra)
			g := startGateway(t, gatewayConfig(backend.Addr()), keysFile(k))
			ctx := ctxTimeout(t, 30*time.Second)
			const idle = time.Second
			d := lifecycleDevice(t, g, k, v.version, func(c *devsim.DeviceConfig) { c.RehandshakeIdle = idle })
			loc, err := d.Register(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Sleep(ctx, idle+idle/2); err != nil {
				t.Fatal(err)
			}
			if err := d.Update(ctx); err != nil {
				t.Fatalf("update after the idle re-handshake: %v", err)
			}
			if n := d.Stats().IdleRehandshakes; n != 1 {
				t.Fatalf("idle re-handshakes %d, want 1", n)
			}
			reg, ok := backend.Registration(k.endpoint)
			if !ok || reg.Location != loc || reg.Updates != 1 || registersAt(backend) != 1 {
				t.Fatalf("registration %+v, want %s updated once; %d Registers", reg, loc, registersAt(backend))
			}
			if v, err := backend.Read(ctx, k.endpoint, "/3/0/0"); err != nil || len(v) == 0 {
				t.Fatalf("backend read after the idle re-handshake: %q, %v", v, err)
			}
			replacedAfterEstablished(t, g)
		})
	}
}

// TestSecondIdentityCannotUpdateFirstsLocation (issue 9.2, L2): keeping
// registrations across sessions gives no identity another one's location:
// Update and De-register of it get 4.03 and reach no backend.
func TestSecondIdentityCannotUpdateFirstsLocation(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	a, b := newFleetKey("first", ""), newFleetKey("second", "")
	g := startGateway(t, gatewayConfig(backend.Addr()), keysFile(a, b))
	ctx := ctxTimeout(t, 30*time.Second)
	da, db := lifecycleDevice(t, g, a, "1.3", nil), lifecycleDevice(t, g, b, "1.3", nil)
	locA, err := da.Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := da.Rehandshake(ctx); err != nil { // the location now outlives A's first session
		t.Fatal(err)
	}
	received := len(backend.Received())
	db.SetLocation(locA)
	for _, op := range []struct {
		name string
		do   func(context.Context) error
	}{{"update", db.Update}, {"de-register", db.Deregister}} {
		var ce *devsim.CodeError
		if err := op.do(ctx); !errors.As(err, &ce) || ce.Code != codes.Forbidden {
			t.Errorf("%s of another identity's location: %v, want 4.03", op.name, err)
		}
	}
	if n := len(backend.Received()); n != received {
		t.Fatalf("the backend received %d refused requests", n-received)
	}
	if err := da.Update(ctx); err != nil {
		t.Fatalf("the owner's update: %v", err)
	}
}

// TestGatewayRestartThenUpdate (issue 9.2, L2): `gateway serve` stops
// (SIGTERM) and starts again with the same configuration on the same
// address; the device finds its session gone on its next request and does
// what a LwM2M client does (devsim AutoReconnect): a new handshake from the
// same port, an Update to its registration, and a new Register only if the
// Update gets 4.04. It never sees 4.03 (the old binary's answer, after
// which a real client falls back to bootstrap) and keeps working.
//
// The gateway keeps registrations next to the key file, so the Update
// reaches the backend at the old location (TestRegistrationSurvivesRestart
// covers the explicit Reconnect). When that file is damaged while the
// gateway is down, the restarted gateway does not know the location: it
// answers 4.04 itself, and the device registers again.
func TestGatewayRestartThenUpdate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		damage   bool // overwrite registrations.json while the gateway is down
		wantKept bool
	}{
		{name: "registrations kept next to the key file", wantKept: true},
		{name: "registrations file damaged", damage: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend, err := devsim.NewBackend("127.0.0.1:0", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer backend.Close()
			k := newFleetKey("survivor", "")
			config := strings.Replace(gatewayConfig(backend.Addr()), `"127.0.0.1:0"`, fmt.Sprintf(`"127.0.0.1:%d"`, freeUDPPort(t)), 1)
			g := startGateway(t, config, keysFile(k))
			ctx := ctxTimeout(t, 60*time.Second)
			d := lifecycleDevice(t, g, k, "1.3", func(c *devsim.DeviceConfig) { c.AutoReconnect = true })
			loc, err := d.Register(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err, _ := g.terminate(t); err != nil {
				t.Fatalf("gateway exit: %v", err)
			}
			if tc.damage {
				path := filepath.Join(filepath.Dir(g.configPath), "registrations.json")
				if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			again, err := runGateway(t, g.configPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			if again.addr.String() != g.addr.String() {
				t.Fatalf("restarted on %v, was %v", again.addr, g.addr)
			}
			if err := d.Update(ctx); err != nil {
				t.Fatalf("update after the restart: %v", err)
			}
			if d.Stats().Reconnects != 1 {
				t.Fatalf("device stats %+v, want one reconnection", d.Stats())
			}
			reg, _ := backend.Registration(k.endpoint)
			kept := reg.Location == loc && registersAt(backend) == 1
			t.Logf("registration kept across the restart: %v (%+v, %d Registers)", kept, reg, registersAt(backend))
			if kept != tc.wantKept {
				t.Fatalf("registration kept %v, want %v", kept, tc.wantKept)
			}
			if !kept {
				// 4.04 from the gateway itself: the backend saw a new
				// Register and never an Update of the old location.
				for _, r := range backend.Received() {
					if r.Path == loc {
						t.Fatalf("the backend received %v %s: the 4.04 was not the gateway's", r.Code, r.Path)
					}
				}
				if reg.Location != d.Location() || registersAt(backend) != 2 {
					t.Fatalf("re-registration: backend %+v, device location %s, %d Registers", reg, d.Location(), registersAt(backend))
				}
			}
			if v, err := backend.Read(ctx, k.endpoint, "/3/0/0"); err != nil || len(v) == 0 {
				t.Fatalf("backend read after the restart: %q, %v", v, err)
			}
		})
	}
}
