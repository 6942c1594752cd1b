package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/gateway"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/memory"
)

// startGateway runs an in-test gateway over keys in a memory store, with
// the tool's own backend of kind behind it.
func startGateway(t *testing.T, keys []pskstore.Key, kind string) (string, *embeddedBackend) {
	t.Helper()
	_, addr, backend := startGatewayServer(t, keys, kind)
	return addr, backend
}

// startGatewayServer is startGateway that also returns the gateway.
func startGatewayServer(t *testing.T, keys []pskstore.Key, kind string) (*gateway.Server, string, *embeddedBackend) {
	t.Helper()
	backend, err := startBackend(kind, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = backend.Close() })
	store, err := memory.New(keys...)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := gateway.New(gateway.Config{
		Listeners: []gateway.Listener{{Address: "127.0.0.1:0"}},
		Store:     store,
		Backends:  map[string]string{"dm": backend.Addr().String()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		_ = srv.Close()
		<-done
	})
	return srv, srv.Addrs()[0].String(), backend
}

// writeTestKeys generates keys for mix and writes them where --keys reads.
func writeTestKeys(t *testing.T, n int, spec string) ([]pskstore.Key, string) {
	t.Helper()
	m, err := parseMix(spec)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := genKeys(n, m, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.yaml")
	if err := writeKeys(path, keys); err != nil {
		t.Fatal(err)
	}
	return keys, path
}

func runTool(t *testing.T, o *options) *summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := runFleet(ctx, o, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A short LwM2M run through a real gateway, every handshake kind of the
// mix, every operation of the pattern, churn: the summary counts add up
// and nothing failed. No timing assertions.
func TestEndToEndLwM2M(t *testing.T) {
	const devices = 6
	const mixSpec = "1.3-dhe=1,1.3-ke=1,1.2-ccm8=1"
	keys, path := writeTestKeys(t, devices, mixSpec)
	addr, backend := startGateway(t, keys, backendLwM2M)
	o, err := parseFlags([]string{"--server", addr, "--keys", path, "--devices", "6", "--mix", mixSpec,
		"--backend", backend.Addr().String(), "--pattern", "update=2,notify=1,read=1,send=1", "--msg-rate", "40",
		"--duration", "2s", "--churn", "0.2", "--server-pid", strconv.Itoa(os.Getpid()), "--progress", "500ms"}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	o.backend = backend
	s := runTool(t, o)

	if s.Handshakes.Failed != 0 || s.Requests.Failed != 0 || len(s.Errors) != 0 {
		t.Fatalf("failures: handshakes %d, requests %d, errors %v %v", s.Handshakes.Failed, s.Requests.Failed, s.Errors, s.ErrorSamples)
	}
	if s.Handshakes.ConnectOK != devices || s.Handshakes.OK != devices+s.Reconnects {
		t.Errorf("handshakes: connect phase %d, total %d, reconnects %d", s.Handshakes.ConnectOK, s.Handshakes.OK, s.Reconnects)
	}
	for _, p := range []string{"1.3-dhe", "1.3-ke", "1.2-ccm8"} {
		if c := s.Handshakes.ByProfile[p]; c == nil || c.OK < 2 {
			t.Errorf("profile %s: %+v", p, c)
		}
	}
	// Every (re)connection registered and, with notify in the pattern, was
	// observed by the backend.
	if got := s.Requests.ByOp[opRegister].OK; got != s.Handshakes.OK {
		t.Errorf("registers %d, handshakes %d", got, s.Handshakes.OK)
	}
	if got := s.Requests.ByOp[opObserve].OK; got != s.Handshakes.OK {
		t.Errorf("observes %d, handshakes %d", got, s.Handshakes.OK)
	}
	var total int64
	for _, op := range []string{opUpdate, opNotify, opRead, opSend} {
		o := s.Requests.ByOp[op]
		if o.OK == 0 {
			t.Errorf("no successful %s", op)
		}
		total += o.OK
	}
	total += s.Requests.ByOp[opRegister].OK + s.Requests.ByOp[opObserve].OK
	if total != s.Requests.OK {
		t.Errorf("requests by operation add up to %d, total %d", total, s.Requests.OK)
	}
	if s.Requests.Latency.Count != s.Requests.OK || s.Handshakes.Latency.Count != s.Handshakes.OK {
		t.Errorf("latency counts %d/%d", s.Requests.Latency.Count, s.Handshakes.Latency.Count)
	}
	if s.Server == nil || s.Server.Error != "" || s.Server.RSSBefore == 0 {
		t.Errorf("server sampling: %+v", s.Server)
	}
	if got := len(backend.lwm2m.Registrations()); got != devices {
		t.Errorf("backend has %d registrations, want %d", got, devices)
	}
}

// Raw mode through the gateway to the echo backend, and straight to it
// without DTLS: exactly --messages requests, all answered.
func TestEndToEndRaw(t *testing.T) {
	keys, path := writeTestKeys(t, 4, "1.3-dhe=1,1.2-ccm8=1")
	addr, backend := startGateway(t, keys, backendEcho)
	o, err := parseFlags([]string{"--raw", "--server", addr, "--keys", path, "--devices", "4", "--mix", "1.3-dhe=1,1.2-ccm8=1", "--source-ips", "3",
		"--msg-rate", "max", "--messages", "200", "--duration", "20s", "--progress", "-1s"}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	s := runTool(t, o)
	if s.Handshakes.OK != 4 || s.Handshakes.Failed != 0 || s.Requests.OK != 200 || s.Requests.Failed != 0 {
		t.Fatalf("handshakes %d/%d, requests %d/%d, errors %v", s.Handshakes.OK, s.Handshakes.Failed, s.Requests.OK, s.Requests.Failed, s.ErrorSamples)
	}
	if got := backend.echo.served.Load(); got != 200 {
		t.Errorf("echo backend served %d", got)
	}

	o, err = parseFlags([]string{"--raw", "--no-dtls", "--server", backend.Addr().String(), "--devices", "2",
		"--msg-rate", "max", "--messages", "50", "--duration", "20s", "--progress", "-1s"}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	s = runTool(t, o)
	if s.Handshakes.OK != 2 || s.Requests.OK != 50 || s.Requests.Failed != 0 || s.Mode != "raw-udp" {
		t.Fatalf("plain: handshakes %d, requests %d/%d, mode %s", s.Handshakes.OK, s.Requests.OK, s.Requests.Failed, s.Mode)
	}
}

// A device whose key the gateway does not hold fails its handshake, and
// the summary says so by kind.
func TestEndToEndUnknownKey(t *testing.T) {
	keys, _ := writeTestKeys(t, 1, "1.3-dhe")
	addr, _ := startGateway(t, keys, backendEcho)
	_, other := writeTestKeys(t, 2, "1.3-dhe") // fresh keys, unknown to the gateway
	o, err := parseFlags([]string{"--raw", "--server", addr, "--keys", other, "--devices", "2", "--duration", "0",
		"--timeout", "3s", "--progress", "-1s"}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	s := runTool(t, o)
	if s.Handshakes.OK != 0 || s.Handshakes.Failed != 2 {
		t.Fatalf("handshakes %d/%d", s.Handshakes.OK, s.Handshakes.Failed)
	}
	var n int64
	for k, v := range s.Errors {
		if len(k) > len("handshake_") && k[:len("handshake_")] == "handshake_" {
			n += v
		}
	}
	if n != 2 {
		t.Errorf("handshake errors %v", s.Errors)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}
