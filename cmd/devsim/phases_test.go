package main

import (
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// signalWriter logs the tool's lines and answers each --wait-signal gate
// with SIGUSR1, as bench/runner does once it has measured the server.
type signalWriter struct {
	t     *testing.T
	mu    sync.Mutex
	gates int
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	if strings.Contains(string(p), "devsim: phase wait start") {
		w.mu.Lock()
		w.gates++
		w.mu.Unlock()
		if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
			w.t.Errorf("SIGUSR1: %v", err)
		}
	}
	return len(p), nil
}

// The benchmark phases through a real gateway: devices take their keys
// from --key-offset on (the gateway holds no other keys) and bind the
// ports of --source-port-base, wait at both
// --wait-signal gates, send one --warmup request each, the steady
// phase's --messages, and after --wake-after one wake request each; the
// server's CPU of the wake phase is reported apart.
func TestEndToEndBenchPhases(t *testing.T) {
	const devices, offset, messages = 3, 2, 30
	keys, path := writeTestKeys(t, offset+devices, "1.3-dhe")
	addr, backend := startGateway(t, keys[offset:], backendEcho)
	// A port the kernel just gave out on the first address is free there
	// and, most likely, on the next two: the devices bind it explicitly.
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 1, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	base := probe.LocalAddr().(*net.UDPAddr).Port
	probe.Close()
	w := &signalWriter{t: t}
	o, err := parseFlags([]string{"--raw", "--server", addr, "--keys", path, "--key-offset", strconv.Itoa(offset),
		"--source-ips", "3", "--source-port-base", strconv.Itoa(base),
		"--devices", strconv.Itoa(devices), "--wait-signal", "--warmup", "--wake-after", "1s",
		"--msg-rate", "200", "--messages", strconv.Itoa(messages), "--duration", "20s",
		"--server-pid", strconv.Itoa(os.Getpid()), "--progress", "-1s"}, w)
	if err != nil {
		t.Fatal(err)
	}
	s, err := runFleet(t.Context(), o, w)
	if err != nil {
		t.Fatal(err)
	}
	if s.Handshakes.OK != devices || s.Handshakes.Failed != 0 || s.Requests.Failed != 0 {
		t.Fatalf("handshakes %d/%d, requests failed %d, errors %v", s.Handshakes.OK, s.Handshakes.Failed, s.Requests.Failed, s.ErrorSamples)
	}
	for op, want := range map[string]int64{opWarmup: devices, opEcho: messages, opWake: devices} {
		if got := s.Requests.ByOp[op].OK; got != want {
			t.Errorf("%s requests: %d, want %d", op, got, want)
		}
	}
	if s.Requests.SteadyDone != messages {
		t.Errorf("steady phase counted %d requests, want %d (warm-up and wake are apart)", s.Requests.SteadyDone, messages)
	}
	if got := backend.echo.served.Load(); got != 2*devices+messages {
		t.Errorf("echo backend served %d, want %d", got, 2*devices+messages)
	}
	if s.Server == nil || s.Server.Error != "" || s.Server.WakeRequests != devices {
		t.Errorf("server sampling: %+v", s.Server)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gates != 2 {
		t.Errorf("%d --wait-signal gates, want 2", w.gates)
	}
}

// --hold: the devices drop their DTLS state without close_notify and keep
// their sockets, so the gateway still holds their sessions after the tool
// ended. A second, ordinary run (other identities, which close their
// sessions at the end) follows: the gateway reads one socket in order, so
// a close_notify of the first run would have been handled before the
// second run's handshakes.
func TestEndToEndHold(t *testing.T) {
	const devices = 3
	const mix = "1.3-dhe=1,1.2-ccm8=1"
	keys, path := writeTestKeys(t, 2*devices, mix)
	srv, addr, _ := startGatewayServer(t, keys, backendEcho)
	for _, hold := range []bool{true, false} {
		args := []string{"--raw", "--server", addr, "--keys", path, "--devices", strconv.Itoa(devices),
			"--mix", mix, "--duration", "0", "--progress", "-1s"}
		if hold {
			args = append(args, "--hold")
		} else {
			args = append(args, "--key-offset", strconv.Itoa(devices))
		}
		o, err := parseFlags(args, testWriter{t})
		if err != nil {
			t.Fatal(err)
		}
		s := runTool(t, o)
		if s.Handshakes.OK != devices || s.Handshakes.Failed != 0 || len(s.Errors) != 0 {
			t.Fatalf("hold %v: handshakes %d/%d, errors %v", hold, s.Handshakes.OK, s.Handshakes.Failed, s.ErrorSamples)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Stats().Established != devices {
		if time.Now().After(deadline) {
			t.Fatalf("gateway has %d established sessions, want the %d held ones", srv.Stats().Established, devices)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cpuBetween sums the threads' run times, counts a new thread whole, and
// falls back to the clock-tick figure when a thread ended in between.
func TestCPUBetween(t *testing.T) {
	a := procSample{CPU: 100 * time.Millisecond, tasks: map[int]uint64{1: 5e6, 2: 7e6}}
	b := procSample{CPU: 130 * time.Millisecond, tasks: map[int]uint64{1: 6e6, 2: 9e6, 3: 4e6}}
	if got := cpuBetween(a, b); got != 7*time.Millisecond {
		t.Errorf("threads: %v, want 7ms", got)
	}
	c := procSample{CPU: 130 * time.Millisecond, tasks: map[int]uint64{1: 6e6}}
	if got := cpuBetween(a, c); got != 30*time.Millisecond {
		t.Errorf("a thread ended: %v, want the ticks' 30ms", got)
	}
	if got := cpuBetween(procSample{CPU: time.Second}, procSample{CPU: 2 * time.Second}); got != time.Second {
		t.Errorf("no schedstat: %v", got)
	}
	s, err := readProc(os.Getpid())
	if err != nil || s.tasks == nil || len(s.tasks) != s.Threads {
		t.Errorf("readProc: %d threads, tasks %v, %v", s.Threads, s.tasks, err)
	}
}

// With --source-port-base, device N (counted from --key-offset) binds port
// base + N / --source-ips on address N % --source-ips, so processes that
// share a key file at different offsets never share a port.
func TestLocalAddrPorts(t *testing.T) {
	r := &runner{o: &options{keyOffset: 5, sourceIPs: 4, sourcePort: 20000}, loopback4: true}
	for i, want := range map[int]string{0: "127.1.0.2:20001", 3: "127.1.0.1:20002", 7: "127.1.0.1:20003"} {
		if got := r.localAddr(i); got != want {
			t.Errorf("localAddr(%d) = %s, want %s", i, got, want)
		}
	}
	r.o.sourcePort = 0
	if got := r.localAddr(0); got != "127.1.0.2:0" {
		t.Errorf("without a port base: %s", got)
	}
}
