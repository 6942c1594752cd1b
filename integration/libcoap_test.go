package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"math/big"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// randomText is a password-like key: what libcoap's `-k` takes. The store's
// entropy screen flags it (R2), so its entry needs allow_low_entropy and the
// gateway then refuses plain-PSK suites for it.
func randomText(n int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	out := make([]byte, n)
	for i := range out {
		v, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		out[i] = alphabet[v.Int64()]
	}
	return out
}

// randomNonZero is a high-entropy binary key without NUL bytes, so it can
// still travel through argv to libcoap's `-k`.
func randomNonZero(n int) []byte {
	out := make([]byte, n)
	for i := range out {
		for out[i] == 0 {
			_, _ = rand.Read(out[i : i+1])
		}
	}
	return out
}

func startCoapServer(t *testing.T) int {
	t.Helper()
	bin := requireTool(t, "coap-server-notls")
	port := freeUDPPort(t)
	cmd := exec.Command(bin, "-A", "127.0.0.1", "-p", fmt.Sprint(port), "-d", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// Ready when a plain GET is answered.
	client := requireTool(t, "coap-client-notls")
	for i := 0; i < 50; i++ {
		out, _ := exec.Command(client, "-B", "1", fmt.Sprintf("coap://127.0.0.1:%d/", port)).CombinedOutput()
		if bytes.Contains(out, []byte("libcoap")) {
			return port
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("coap-server-notls did not answer")
	return 0
}

// coapClient runs a libcoap client through the gateway and returns its output.
func coapClient(t *testing.T, bin, identity string, key []byte, args ...string) string {
	t.Helper()
	all := append([]string{"-B", "5", "-u", identity, "-k", string(key)}, args...)
	out, _ := exec.Command(bin, all...).CombinedOutput()
	return string(out)
}

// TestLibcoapPeersThroughGateway: real DTLS 1.2 PSK clients (GnuTLS and
// OpenSSL builds of libcoap) reach a real CoAP server through the gateway,
// GET, PUT and POST, and get the backend's payloads back unchanged (L4).
func TestLibcoapPeersThroughGateway(t *testing.T) {
	backendPort := startCoapServer(t)
	gnutlsKey := randomText(32)
	opensslKey := randomNonZero(32)
	keys := fmt.Sprintf(`keys:
  - identity: "libcoap-gnutls"
    key_base64: %q
    endpoint: "urn:dev:gnutls"
    allow_low_entropy: true   # a text key: R2 forbids plain PSK, GnuTLS negotiates ECDHE-PSK
  - identity: "libcoap-openssl"
    key_base64: %q
    endpoint: "urn:dev:openssl"
    legacy: true              # DTLS 1.2 plain-PSK suites allowed (R3)
`, base64.StdEncoding.EncodeToString(gnutlsKey), base64.StdEncoding.EncodeToString(opensslKey))
	g := startGateway(t, fmt.Sprintf(`
listeners: [{address: "127.0.0.1:0"}]
backends: {dm: {address: "127.0.0.1:%d"}}
store: {path: keys.yaml}
`, backendPort), keys)
	base := fmt.Sprintf("coaps://127.0.0.1:%d", g.addr.Port)

	peers := []struct {
		bin, identity string
		key           []byte
		suite         string
	}{
		{"coap-client-gnutls", "libcoap-gnutls", gnutlsKey, "TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256"},
		{"coap-client-openssl", "libcoap-openssl", opensslKey, ""},
	}
	for _, p := range peers {
		t.Run(p.bin, func(t *testing.T) {
			bin := requireTool(t, p.bin)
			if out := coapClient(t, bin, p.identity, p.key, base+"/"); !strings.Contains(out, "This is a test server made with libcoap") {
				t.Fatalf("GET /: %q", out)
			}
			res := base + "/res-" + p.identity
			if out := coapClient(t, bin, p.identity, p.key, "-m", "put", "-e", "created by put", res); strings.Contains(out, "4.") || strings.Contains(out, "5.") {
				t.Fatalf("PUT: %q", out)
			}
			payload := "posted through the gateway by " + p.bin
			if out := coapClient(t, bin, p.identity, p.key, "-m", "post", "-e", payload, res); strings.Contains(out, "4.") || strings.Contains(out, "5.") {
				t.Fatalf("POST: %q", out)
			}
			if out := coapClient(t, bin, p.identity, p.key, res); strings.TrimSpace(out) != payload {
				t.Fatalf("GET after POST: %q, want %q", out, payload)
			}
			want := map[string]string{"version": "dtls1.2"}
			if p.suite != "" {
				want["suite"] = p.suite
			}
			g.waitLog(t, "session established", want)
		})
	}

	t.Run("wrong key", func(t *testing.T) {
		bin := requireTool(t, "coap-client-openssl")
		out := coapClient(t, bin, "libcoap-openssl", randomNonZero(32), base+"/")
		if strings.Contains(out, "libcoap") {
			t.Fatalf("wrong key got through: %q", out)
		}
	})
	t.Run("unknown identity", func(t *testing.T) {
		bin := requireTool(t, "coap-client-gnutls")
		out := coapClient(t, bin, "nobody", gnutlsKey, base+"/")
		if strings.Contains(out, "libcoap") {
			t.Fatalf("unknown identity got through: %q", out)
		}
		g.waitLog(t, "handshake failed", map[string]string{"reason": "unknown_identity"})
	})
	// No log line carries a key or a raw identity (R9).
	for _, l := range g.logLines() {
		line := fmt.Sprint(l)
		for _, secret := range []string{string(gnutlsKey), "libcoap-gnutls", "libcoap-openssl", base64.StdEncoding.EncodeToString(gnutlsKey)} {
			if strings.Contains(line, secret) {
				t.Fatalf("R9: log line leaks %q: %s", secret, line)
			}
		}
	}
}
