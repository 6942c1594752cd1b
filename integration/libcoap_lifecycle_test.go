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
	port := fmt.Sprint(freeUDPPort(t))
	observer := exec.Command(bin, "-p", port, "-u", "openssl-reboot", "-k", string(key), "-s", "20", "-B", "30", base+"/time")
	var out lockedBuffer
	observer.Stdout, observer.Stderr = &out, &out
	if err := observer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = observer.Process.Kill() })
	g.waitLogs(t, 1, "session established", nil)
	// The observation is running once the first notification is printed.
	deadline := time.Now().Add(10 * time.Second)
	for out.Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the observing client printed nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := observer.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = observer.Wait()

	again := exec.Command(bin, "-p", port, "-u", "openssl-reboot", "-k", string(key), "-B", "5", base+"/")
	if got, _ := runFor(t, again, 20*time.Second); !strings.Contains(got, libcoapGreeting) {
		t.Fatalf("the client run again from port %s: %q; gateway logs: %v", port, got, g.logLines())
	}
	replacedAfterEstablished(t, g)
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
