// Package integration runs the real gateway binary end to end against
// simulated LwM2M devices (internal/devsim) and real third-party peers
// (libcoap's coap-client-gnutls, coap-client-openssl, coap-server-notls;
// wolfSSL's example client, built by scripts/wolfssl/build.sh). A missing
// peer fails the test with the command that installs it: `make test` (and
// so CI) installs them; nothing is skipped silently.
package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/pgtest"
)

// gatewayBin is the binary built once by TestMain, exactly as `go build`
// builds it for operators.
var gatewayBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gateway-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gatewayBin = filepath.Join(dir, "gateway")
	build := exec.Command("go", "build", "-o", gatewayBin, "../cmd/gateway")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the gateway:", err)
		os.Exit(1)
	}
	code := pgtest.Main(m) // m.Run, then stop the PostgreSQL cluster the tests started, if any
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// requireTool fails the test when a peer is missing; `make test` installs it.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run `make test` (it installs libcoap3-bin) or `apt-get install -y libcoap3-bin`", name)
	}
	return p
}

// gatewayProc is a running `gateway serve`.
type gatewayProc struct {
	cmd        *exec.Cmd
	configPath string // set by startGateway
	addr       *net.UDPAddr
	mu         sync.Mutex
	logs       []map[string]any
	exit       chan error
}

// startGateway writes config and keys into a temp dir and runs the binary.
func startGateway(t *testing.T, configYAML, keysYAML string) *gatewayProc {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keys.yaml"), []byte(keysYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "gateway.yaml")
	configYAML += "\n" + freeAdmin(configYAML) + "\n"
	if !strings.Contains(configYAML, "log:") {
		// Every line written at once: tests count and look for lines
		// while the gateway runs.
		configYAML += "log: {flush_interval: 0s}\n"
	}
	if err := os.WriteFile(cfgPath, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := runGateway(t, cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// runGateway runs `gateway serve --config cfgPath` with env added to the
// environment and waits until it listens; it returns why it did not. The
// process is killed when the test ends.
func runGateway(t *testing.T, cfgPath string, env []string) (*gatewayProc, error) {
	t.Helper()
	cmd := exec.Command(gatewayBin, "serve", "--config", cfgPath)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	g := &gatewayProc{cmd: cmd, configPath: cfgPath, exit: make(chan error, 1)}
	listening := make(chan string, 1)
	logsDone := make(chan struct{})
	go func() {
		g.readLogs(stderr, listening)
		close(logsDone)
	}()
	go func() {
		// Wait closes the stderr pipe: read it to the end first, or the
		// last lines (the error of a gateway that refused to start) are lost.
		<-logsDone
		g.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-g.exit
	})
	select {
	case a := <-listening:
		ua, err := net.ResolveUDPAddr("udp", a)
		if err != nil {
			return g, err
		}
		g.addr = ua
		return g, nil
	case err := <-g.exit:
		g.exit <- err // for Cleanup, which waits for the exit
		return g, fmt.Errorf("gateway exited before listening: %v; logs: %v", err, g.logLines())
	case <-time.After(10 * time.Second):
		return g, fmt.Errorf("gateway did not start listening; logs: %v", g.logLines())
	}
}

func (g *gatewayProc) readLogs(r io.Reader, listening chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			m = map[string]any{"raw": sc.Text()}
		}
		g.mu.Lock()
		g.logs = append(g.logs, m)
		g.mu.Unlock()
		if m["msg"] == "listening" {
			select {
			case listening <- fmt.Sprint(m["addr"]):
			default:
			}
		}
	}
}

func (g *gatewayProc) logLines() []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]any(nil), g.logs...)
}

// waitLog waits for a log line whose msg is msg and whose fields contain want.
func (g *gatewayProc) waitLog(t *testing.T, msg string, want map[string]string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range g.logLines() {
			if l["msg"] != msg {
				continue
			}
			ok := true
			for k, v := range want {
				if !strings.Contains(fmt.Sprint(l[k]), v) {
					ok = false
				}
			}
			if ok {
				return l
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no log %q with %v; logs: %v", msg, want, g.logLines())
	return nil
}

// countLogs counts log lines whose msg is msg and whose fields contain want.
func (g *gatewayProc) countLogs(msg string, want map[string]string) int {
	n := 0
	for _, l := range g.logLines() {
		if l["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range want {
			if !strings.Contains(fmt.Sprint(l[k]), v) {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// waitLogCount waits until countLogs reaches n.
func (g *gatewayProc) waitLogCount(t *testing.T, msg string, want map[string]string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for g.countLogs(msg, want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d logs %q with %v; logs: %v", n, msg, want, g.logLines())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// terminate sends SIGTERM and returns the exit error and how long it took.
func (g *gatewayProc) terminate(t *testing.T) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-g.exit:
		g.exit <- err // for Cleanup
		return err, time.Since(start)
	case <-time.After(15 * time.Second):
		t.Fatal("gateway did not exit within 15 s of SIGTERM")
	}
	return nil, 0
}

// freeUDPPort reserves a loopback UDP port for a peer that needs a fixed one.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
