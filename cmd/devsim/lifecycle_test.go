package main

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4"
)

// startRelay runs devsim's Relay (a pion stand-in for the gateway that
// accepts a new handshake from the address of a live session, as issue 9
// asks of the gateway) over keys, forwarding to a fresh LwM2M backend.
func startRelay(t *testing.T, keys []pskstore.Key, opts ...dtls.ServerOption) (*devsim.Relay, *embeddedBackend) {
	t.Helper()
	backend, err := startBackend(backendLwM2M, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = backend.Close() })
	r, err := devsim.NewRelay(devsim.RelayConfig{
		Backend: backend.Addr(),
		PSK: func(id []byte) *dtls.PSK {
			for _, k := range keys {
				if bytes.Equal(k.Identity, id) {
					return &dtls.PSK{Identity: k.Identity, Key: k.Secret, Hash: cmpHash(k.Hash)}
				}
			}
			return nil
		},
		Options: opts,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r, backend
}

func cmpHash(h crypto.Hash) crypto.Hash {
	if h == 0 {
		return crypto.SHA256
	}
	return h
}

// TestEndToEndLifecycle: a fleet that reboots, re-handshakes when idle and
// sleeps, against a relay that accepts new handshakes from the same port:
// nothing fails, and the summary counts each behaviour once per event.
func TestEndToEndLifecycle(t *testing.T) {
	const devices = 6
	const mixSpec = "1.3-dhe=1,1.2-ccm8=1"
	keys, path := writeTestKeys(t, devices, mixSpec)
	r, backend := startRelay(t, keys)
	o, err := parseFlags([]string{"--server", r.Addr().String(), "--keys", path, "--devices", "6", "--mix", mixSpec,
		"--backend", backend.Addr().String(), "--pattern", "update=1,send=1", "--msg-rate", "3", "--duration", "3s",
		"--reboot-every", "1s", "--rehandshake-idle", "500ms", "--sleep", "700ms", "--sleep-rate", "0.2",
		"--progress", "-1s"}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	o.backend = backend
	s := runTool(t, o)

	if s.Handshakes.Failed != 0 || s.Requests.Failed != 0 || len(s.Errors) != 0 {
		t.Fatalf("failures: handshakes %d, requests %d, errors %v %v", s.Handshakes.Failed, s.Requests.Failed, s.Errors, s.ErrorSamples)
	}
	l := s.Lifecycle
	if l.Reboots == 0 || l.IdleRehandshakes == 0 || l.Sleeps == 0 {
		t.Errorf("lifecycle %+v: want reboots, idle re-handshakes and sleeps", l)
	}
	byKind := func(k string) int64 { return s.Handshakes.ByKind[k].OK }
	if byKind(kindReboot) != l.Reboots || byKind(kindIdle) != l.IdleRehandshakes || byKind(kindConnect) != devices {
		t.Errorf("handshakes by kind %+v, lifecycle %+v", s.Handshakes.ByKind, l)
	}
	if got := s.Requests.ByOp[opReboot].OK; got != l.Reboots {
		t.Errorf("reboot ops %d, reboots %d", got, l.Reboots)
	}
	if got := s.Requests.ByOp[opWake].OK; got != l.Sleeps {
		t.Errorf("wake updates %d, sleeps %d", got, l.Sleeps)
	}
	if total := s.Handshakes.OK; total != devices+l.Reboots+l.IdleRehandshakes {
		t.Errorf("handshakes %d, want %d connect + %d reboot + %d idle", total, devices, l.Reboots, l.IdleRehandshakes)
	}
	// Every handshake of a device came from its one socket: as many
	// addresses as devices, whatever the number of handshakes.
	from := map[string]bool{}
	for _, h := range r.Handshakes() {
		from[h.Remote] = true
	}
	if len(from) != devices || r.Replaced() == 0 {
		t.Errorf("handshakes from %d addresses (want %d), %d live sessions replaced", len(from), devices, r.Replaced())
	}
	if got := len(backend.lwm2m.Registrations()); got != devices {
		t.Errorf("backend has %d registrations, want %d", got, devices)
	}
}

// phaseWriter signals when the tool prints a phase line.
type phaseWriter struct {
	t       *testing.T
	phase   string
	once    sync.Once
	reached chan struct{}
}

func (w *phaseWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.phase) {
		w.once.Do(func() { close(w.reached) })
	}
	w.t.Logf("%s", p)
	return len(p), nil
}

// TestEndToEndAutoReconnect: the relay forgets every session while the
// fleet runs (a gateway restart); with --auto-reconnect each device whose
// request goes unanswered handshakes again from its port and Updates its
// registration, and no request is lost.
func TestEndToEndAutoReconnect(t *testing.T) {
	const devices = 4
	keys, path := writeTestKeys(t, devices, "1.3-dhe")
	r, backend := startRelay(t, keys)
	o, err := parseFlags([]string{"--server", r.Addr().String(), "--keys", path, "--devices", "4",
		"--backend", backend.Addr().String(), "--pattern", "update=1,send=1", "--msg-rate", "8", "--duration", "4s",
		"--auto-reconnect", "--ack-timeout", "1s", "--max-retransmit", "0", "--progress", "-1s"}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	o.backend = backend
	w := &phaseWriter{t: t, phase: "phase steady start", reached: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan *summary, 1)
	go func() {
		s, err := runFleet(ctx, o, w)
		if err != nil {
			t.Error(err)
		}
		done <- s
	}()
	select {
	case <-w.reached:
	case <-ctx.Done():
		t.Fatal("no steady phase")
	}
	r.Forget()
	s := <-done
	if s == nil {
		t.FailNow()
	}
	if s.Requests.Failed != 0 || s.Handshakes.Failed != 0 {
		t.Fatalf("failures: handshakes %d, requests %d, errors %v %v", s.Handshakes.Failed, s.Requests.Failed, s.Errors, s.ErrorSamples)
	}
	if l := s.Lifecycle; l.Reconnects == 0 || l.Reconnects != s.Handshakes.ByKind[kindReconnect].OK {
		t.Errorf("lifecycle %+v, handshakes by kind %+v: want reconnections", l, s.Handshakes.ByKind)
	}
	// The registrations are the ones from before the restart: Updated, not
	// registered again.
	if got := s.Requests.ByOp[opRegister].OK; got != devices {
		t.Errorf("%d Registers, want %d (only the first ones)", got, devices)
	}
}

// TestEndToEndRefused (issue 13): sessions the server refuses right after
// the handshake count as failed handshakes with the alert, not as
// completed handshakes followed by failed requests; in LwM2M and raw mode.
func TestEndToEndRefused(t *testing.T) {
	refuse := dtls.WithVerifyConnection(func(*dtls.State) error { return errors.New("policy") })
	for _, raw := range []bool{false, true} {
		name := map[bool]string{false: "lwm2m", true: "raw"}[raw]
		t.Run(name, func(t *testing.T) {
			keys, path := writeTestKeys(t, 2, "1.3-dhe")
			r, _ := startRelay(t, keys, refuse)
			args := []string{"--server", r.Addr().String(), "--keys", path, "--devices", "2", "--duration", "0", "--progress", "-1s"}
			if raw {
				// The requests find the sessions gone, which is when the
				// tool learns of the refusal.
				args = append(args, "--raw", "--duration", "30s", "--msg-rate", "max", "--messages", "2")
			}
			o, err := parseFlags(args, testWriter{t})
			if err != nil {
				t.Fatal(err)
			}
			s := runTool(t, o)
			if s.Handshakes.OK != 0 || s.Handshakes.Failed != 2 {
				t.Errorf("handshakes ok %d failed %d, want 0 and 2", s.Handshakes.OK, s.Handshakes.Failed)
			}
			// The alert usually arrives after the device's handshake
			// completed (refused), sometimes still during it.
			after, during := s.Errors["handshake_refused_alert_BadCertificate"], s.Errors["handshake_alert_BadCertificate"]
			if after+during != 2 {
				t.Errorf("errors %v %v: want 2 handshakes failed with bad_certificate", s.Errors, s.ErrorSamples)
			}
			if !raw && s.Requests.Failed != 0 {
				t.Errorf("%d requests failed: a refusal is a failed handshake, not a failed Register", s.Requests.Failed)
			}
			if s.Lifecycle.RefusedAfterHandshake != after {
				t.Errorf("lifecycle %+v, %d refused after the handshake", s.Lifecycle, after)
			}
		})
	}
}

// TestEndToEndLoss: a fleet on a lossy path (--loss, with the first
// ClientHello of every device lost) completes through retransmission, and
// the summary reports what the path did.
func TestEndToEndLoss(t *testing.T) {
	keys, path := writeTestKeys(t, 3, "1.3-dhe=1,1.2-ccm8=1")
	addr, backend := startGateway(t, keys, backendLwM2M)
	o, err := parseFlags([]string{"--server", addr, "--keys", path, "--devices", "3", "--mix", "1.3-dhe=1,1.2-ccm8=1",
		"--pattern", "update", "--msg-rate", "max", "--messages", "9", "--duration", "60s", "--ack-timeout", "1s",
		"--loss", "hello-drop=1,dup=0.1,in-jitter=5ms,seed=3", "--flight-interval", "500ms", "--progress", "-1s"}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	o.backend = backend
	s := runTool(t, o)
	if s.Handshakes.OK != 3 || s.Handshakes.Failed != 0 || s.Requests.Failed != 0 || s.Requests.ByOp[opUpdate].OK != 9 {
		t.Fatalf("handshakes %d/%d, requests %+v, errors %v", s.Handshakes.OK, s.Handshakes.Failed, s.Requests.ByOp, s.ErrorSamples)
	}
	if s.Loss == nil || s.Loss.Out.Dropped != 3 || s.Loss.In.Delayed == 0 {
		t.Errorf("loss %+v: want the 3 first ClientHellos dropped and delays", s.Loss)
	}
}

// TestLossFlag parses --loss.
func TestLossFlag(t *testing.T) {
	l, err := parseLoss("drop=0.1,out-dup=0.5,in-delay=20ms,jitter=5ms,hello-drop=2,hvr-drop=1,in-drop-first=3,seed=9")
	if err != nil {
		t.Fatal(err)
	}
	if l.Out.Drop != 0.1 || l.In.Drop != 0.1 || l.Out.Duplicate != 0.5 || l.In.Duplicate != 0 || l.In.Delay != 20*time.Millisecond ||
		l.Out.Jitter != 5*time.Millisecond || l.In.DropFirst != 3 || l.Seed != 9 || len(l.Out.DropHandshake) != 1 || len(l.In.DropHandshake) != 1 {
		t.Errorf("parsed %+v", l)
	}
	for _, bad := range []string{"drop=2", "drop", "loss=1", "out-hello-drop=1", "delay=-1s", "drop-first=x", "dup=0.5,"} {
		if _, err := parseLoss(bad); err == nil {
			t.Errorf("parseLoss(%q) succeeded", bad)
		}
	}
	for _, args := range [][]string{
		{"--keys", "k", "--raw", "--reboot-every", "1s"},
		{"--keys", "k", "--sleep", "1s"},
		{"--keys", "k", "--reboot-every", "10ms"},
		{"--keys", "k", "--raw", "--no-dtls", "--loss", "drop=0.1"},
		{"--keys", "k", "--fresh-ips", "--source-ips", "4"},
		{"--keys", "k", "--ack-timeout", "1ms"},
	} {
		var ue usageError
		if _, err := parseFlags(args, testWriter{t}); !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}
