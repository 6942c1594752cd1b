package main

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Server kinds.
const (
	kindGateway     = "gateway"      // the gateway, lean data plane (the default)
	kindGatewayPion = "gateway-pion" // the gateway with sessions.data_plane: pion
	kindPion        = "pion"         // bench/pionecho
	kindLibcoap     = "libcoap"      // coap-server-gnutls
	kindFloor       = "floor"        // bench/floor: plain UDP relay + AES-GCM
)

// forwards reports whether a server of kind forwards to a backend (devsim
// then runs its echo backend there).
func forwards(kind string) bool {
	return kind == kindGateway || kind == kindGatewayPion || kind == kindFloor
}

// server is one server process under measurement.
type server struct {
	kind    string
	cmd     *exec.Cmd
	addr    string // DTLS address, host:port
	pprof   string // base URL of net/http/pprof (…/debug/pprof), if served
	metrics string // the gateway's admin /metrics URL, if it has one
	logPath string
	exited  chan struct{}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// freePort returns a UDP port that was free a moment ago on loopback.
func freePort() (int, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// freePortPair returns a UDP port P such that P and P+1 were free a moment
// ago on loopback (libcoap serves CoAP on P and DTLS on P+1).
func freePortPair() (int, error) {
	for range 100 {
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return 0, err
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p + 1})
		a.Close()
		if err == nil {
			b.Close()
			return p, nil
		}
	}
	return 0, fmt.Errorf("no two adjacent free UDP ports on loopback")
}

func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startServer starts a server of kind over the key file keys (YAML; for
// libcoap, the shared text key). The gateway forwards to backendPort.
func (e *env) startServer(kind, keys string, backendPort int, name string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.work, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &server{kind: kind, addr: fmt.Sprintf("127.0.0.1:%d", port), logPath: filepath.Join(dir, kind+".log"), exited: make(chan struct{})}
	var cmd *exec.Cmd
	switch kind {
	case kindGateway, kindGatewayPion:
		cfg := filepath.Join(dir, "gateway.yaml")
		// The defaults of deploy/examples/gateway.yaml, on loopback.
		conf := fmt.Sprintf("listeners: [{address: %q}]\nbackends: {dm: {address: \"127.0.0.1:%d\"}}\nstore: {path: %q}\nlog: {level: info}\n",
			s.addr, backendPort, keys)
		if kind == kindGatewayPion {
			conf += "sessions: {data_plane: pion}\n"
		}
		if e.gatewayAdmin(keys) {
			ap, err := freeTCPPort()
			if err != nil {
				return nil, err
			}
			conf += fmt.Sprintf("admin: {address: \"127.0.0.1:%d\", pprof: true}\n", ap)
			s.metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", ap)
			s.pprof = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof", ap)
		}
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		cmd = exec.Command(filepath.Join(e.bin, "gateway"), "serve", "--config", cfg)
	case kindPion:
		pp, err := freeTCPPort()
		if err != nil {
			return nil, err
		}
		s.pprof = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof", pp)
		cmd = exec.Command(filepath.Join(e.bin, "pionecho"), "--listen", s.addr, "--keys", keys, "--pprof", fmt.Sprintf("127.0.0.1:%d", pp))
	case kindFloor:
		cmd = exec.Command(filepath.Join(e.bin, "floor"), "--listen", s.addr, "--backend", fmt.Sprintf("127.0.0.1:%d", backendPort))
	case kindLibcoap:
		// -p P serves CoAP on P and DTLS on P+1; -h "" sends no identity
		// hint; -k is the key for every identity.
		plain, err := freePortPair()
		if err != nil {
			return nil, err
		}
		s.addr = fmt.Sprintf("127.0.0.1:%d", plain+1)
		cmd = exec.Command(e.libcoap, "-A", "127.0.0.1", "-p", strconv.Itoa(plain), "-k", keys, "-h", "", "-v", "3")
	default:
		return nil, fmt.Errorf("unknown server kind %q", kind)
	}
	logf, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s.cmd = cmd
	go func() { _ = cmd.Wait(); close(s.exited) }()
	if err := s.waitReady(20 * time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s: %w (log %s)", kind, err, s.logPath)
	}
	return s, nil
}

// waitReady waits until the process has bound its DTLS port: a UDP socket
// on the port in /proc/PID/net/udp that is one of the process's own open
// files (the table lists every socket of the network namespace, and other
// programs on the machine may hold the port).
func (s *server) waitReady(limit time.Duration) error {
	_, port, _ := net.SplitHostPort(s.addr)
	p, _ := strconv.Atoi(port)
	want := fmt.Sprintf(":%04X", p)
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("exited during start-up")
		default:
		}
		if owns(s.pid(), want) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not listening on %s after %s", s.addr, limit)
}

// owns reports whether process pid has a UDP socket bound to local
// address suffix port (":%04X" as /proc/net/udp writes it).
func owns(pid int, port string) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp", pid))
	if err != nil {
		return false
	}
	inodes := map[string]bool{}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && strings.HasSuffix(f[1], port) {
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return false
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if target, err := os.Readlink(dir + "/" + e.Name()); err == nil && inodes[target] {
			return true
		}
	}
	return false
}

// stop sends SIGTERM and waits (SIGKILL after 10 s).
func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// textKey is a random 32-character alphanumeric key, for libcoap's -k
// (argv cannot carry arbitrary bytes).
func textKey() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 32)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		b[i] = alphabet[n.Int64()]
	}
	return string(b)
}

// csvKeys writes n devices sharing key to a CSV key file for devsim.
func csvKeys(path string, n int, key string) error {
	var b strings.Builder
	b.WriteString("identity,key_hex,endpoint\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "load%06d,%x,urn:dev:load%06d\n", i, key, i)
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// gatewayAdmin reports, once, whether the gateway's configuration has an
// admin section with pprof (an HTTP listener with /metrics and
// /debug/pprof): the runner then gives it a free port, rather than a fixed
// default another program may hold, and reads the gateway's heap,
// goroutines and profiles from it. An older binary (GATEWAY_BIN) may have
// none.
func (e *env) gatewayAdmin(keys string) bool {
	e.adminOnce.Do(func() {
		cfg := filepath.Join(e.work, "admin-probe.yaml")
		conf := fmt.Sprintf("listeners: [{address: \"127.0.0.1:0\"}]\nbackends: {dm: {address: \"127.0.0.1:9\"}}\nstore: {path: %q}\nadmin: {address: \"127.0.0.1:0\", pprof: true}\n", keys)
		if os.WriteFile(cfg, []byte(conf), 0o600) != nil {
			return
		}
		e.admin = exec.Command(filepath.Join(e.bin, "gateway"), "check-config", cfg).Run() == nil
		e.logf("gateway admin listener (/metrics): %v", e.admin)
	})
	return e.admin
}
