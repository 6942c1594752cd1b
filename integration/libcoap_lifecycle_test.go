package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Issue 9 with real third-party clients: libcoap's OpenSSL build and the
// openssl command line tool, both of which list plain-PSK DTLS 1.2 suites
// before ECDHE-PSK.

// libcoapSite runs a gateway in front of coap-server-notls with one
// high-entropy key, with extra YAML in its entry. Without "legacy: true"
// R3 allows the key DTLS 1.2 only with an ephemeral exchange (ECDHE-PSK).
func libcoapSite(t *testing.T, identity, extra string) (g *gatewayProc, key []byte, base string) {
	t.Helper()
	backendPort := startCoapServer(t)
	key = randomNonZero(32) // no NUL byte for libcoap's -k
	keys := fmt.Sprintf("keys:\n  - identity: %q\n    key_base64: %q\n    endpoint: \"urn:dev:%s\"\n    %s\n",
		identity, base64.StdEncoding.EncodeToString(key), identity, extra)
	g = startGateway(t, fmt.Sprintf(`
listeners: [{address: "127.0.0.1:0"}]
backends: {dm: {address: "127.0.0.1:%d"}}
store: {path: keys.yaml}
`, backendPort), keys)
	return g, key, fmt.Sprintf("coaps://127.0.0.1:%d", g.addr.Port)
}

// libcoapGreeting is what coap-server-notls answers on /.
const libcoapGreeting = "This is a test server made with libcoap"

// TestLibcoapOpenSSLNonLegacyKeyGetsECDHEPSK (issue 9.5, R3): libcoap's
// OpenSSL client offers plain PSK first; with a key that is not legacy the
// gateway chooses ECDHE-PSK, which it also offers, and the client gets
// through. The old gateway chose plain PSK and refused the session.
func TestLibcoapOpenSSLNonLegacyKeyGetsECDHEPSK(t *testing.T) {
	bin := requireTool(t, "coap-client-openssl")
	g, key, base := libcoapSite(t, "openssl-modern", "")
	if out := coapClient(t, bin, "openssl-modern", key, base+"/"); !strings.Contains(out, libcoapGreeting) {
		t.Fatalf("GET /: %q; gateway logs: %v", out, g.logLines())
	}
	g.waitLog(t, "session established", map[string]string{"version": "dtls1.2", "suite": "TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256", "mode": "ecdhe_psk"})
}

// TestOpenSSLPlainPSKFirstGetsECDHEPSK (issue 9.5, R3): the issue's
// reproduction, `openssl s_client -dtls1_2 -cipher
// PSK-AES128-GCM-SHA256:ECDHE-PSK-AES128-CBC-SHA256` with a key that is not
// legacy, negotiates ECDHE-PSK; the old gateway sent alert 42.
func TestOpenSSLPlainPSKFirstGetsECDHEPSK(t *testing.T) {
	bin := requireTool(t, "openssl")
	g, key, _ := libcoapSite(t, "s-client", "")
	cmd := exec.Command(bin, "s_client", "-dtls1_2", "-connect", g.addr.String(), "-psk_identity", "s-client",
		"-psk", hex.EncodeToString(key), "-cipher", "PSK-AES128-GCM-SHA256:ECDHE-PSK-AES128-CBC-SHA256")
	// s_client ends at the end of its input: keep it open until the
	// gateway has the session.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	g.waitLog(t, "session established", map[string]string{"version": "dtls1.2", "suite": "TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256"})
	_ = stdin.Close()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("openssl s_client did not end at the end of its input:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "ECDHE-PSK-AES128-CBC-SHA256") || strings.Contains(out.String(), "alert") {
		t.Fatalf("openssl s_client:\n%s", out.String())
	}
}

// TestLibcoapKilledClientAgainFromSamePort (issue 9.1): the issue's
// reproduction. `coap-client-openssl -p PORT ... -s 20` observes a resource
// through the gateway and is killed with SIGKILL (no close_notify: its
// session stays live at the gateway); the same client run again with the
// same -p PORT handshakes from the same address and gets through. The old
// gateway dropped its ClientHello as a record of the live session and the
// client failed with "cannot send CoAP pdu". The key is legacy, so that
// libcoap-openssl's plain-PSK suite passes R3 on the old gateway too and
// the test fails there for this reason alone.
func TestLibcoapKilledClientAgainFromSamePort(t *testing.T) {
	bin := requireTool(t, "coap-client-openssl")
	g, key, base := libcoapSite(t, "openssl-reboot", "legacy: true")
	port, observer := startObserver(t, g, bin, "openssl-reboot", key, base+"/time")
	if err := observer.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-observer.exited

	again := exec.Command(bin, "-p", port, "-u", "openssl-reboot", "-k", string(key), "-B", "5", base+"/")
	if got, _ := runFor(t, again, 20*time.Second); !strings.Contains(got, libcoapGreeting) {
		t.Fatalf("the client run again from port %s: %q; gateway logs: %v", port, got, g.logLines())
	}
	replacedAfterEstablished(t, g)
}

// observer is a coap-client-openssl observing a resource through the gateway.
type observer struct {
	cmd    *exec.Cmd
	out    lockedBuffer
	exited chan struct{}
}

// startObserver runs `coap-client-openssl -p PORT -s 20` on url from a free
// local port and waits until the gateway has its session and it has printed
// the first notification. A port taken by another process between
// freeUDPPort and the client's bind (the machine is shared) is retried with
// another one.
func startObserver(t *testing.T, g *gatewayProc, bin, identity string, key []byte, url string) (port string, o *observer) {
	t.Helper()
retry:
	for attempt := 0; ; attempt++ {
		port = fmt.Sprint(freeUDPPort(t))
		o = &observer{exited: make(chan struct{})}
		o.cmd = exec.Command(bin, "-p", port, "-u", identity, "-k", string(key), "-s", "20", "-B", "30", url)
		o.cmd.Stdout, o.cmd.Stderr = &o.out, &o.out
		if err := o.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			_ = o.cmd.Wait()
			close(o.exited)
		}()
		t.Cleanup(func() {
			_ = o.cmd.Process.Kill()
			<-o.exited
		})
		deadline := time.Now().Add(15 * time.Second)
		for len(g.logIndexes("session established", nil)) == 0 || o.out.Len() == 0 {
			select {
			case <-o.exited:
				if strings.Contains(o.out.String(), "Address already in use") && attempt < 5 {
					continue retry
				}
				t.Fatalf("the observing client exited: %q; gateway logs: %v", o.out.String(), g.logLines())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the observing client got no session or printed nothing: %q; gateway logs: %v", o.out.String(), g.logLines())
			}
			time.Sleep(20 * time.Millisecond)
		}
		return port, o
	}
}

// runFor runs cmd to its end, killing it after limit, and returns its
// combined output.
func runFor(t *testing.T, cmd *exec.Cmd, limit time.Duration) (string, error) {
	t.Helper()
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not end within %v; output:\n%s", cmd.Path, limit, out.String())
		return "", nil
	}
}

// lockedBuffer is a bytes.Buffer a child process and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
