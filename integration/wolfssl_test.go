package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/lwm2m"
)

// wolfRegister is the CoAP LwM2M Register that scripts/wolfssl/
// coap-register.patch makes wolfSSL's example client send as its first
// message: CON POST /rd?ep=wolfssl-client&lt=300&lwm2m=1.1&b=U, Content-Format
// 40, Message ID "ws", token "wolf". It has no NUL byte: the client sends
// strlen of it.
var wolfRegister = []byte("\x44\x02ws" + "wolf" + "\xb2rd" + "\x11\x28" + "\x3d\x04ep=wolfssl-client" +
	"\x06lt=300" + "\x09lwm2m=1.1" + "\x03b=U" + "\xff</1/0>,</3/0>")

// The example client's PSK is compiled in (wolfssl/test.h, the callback the
// client uses by default: my_psk_client_cs_cb): the identity is
// "Client_identity" followed by the last six characters of the suite's name,
// the key 32 bytes cycling 01 23 45 … ef. It is a known test constant with 8
// distinct byte values, so the store's entropy screen refuses it (R2) unless
// the entry says allow_low_entropy; the gateway then never allows psk_ke for
// it, and the client's psk_dhe_ke is what the test needs anyway.
const (
	wolfIdentity = "Client_identitySHA256"
	wolfKeyHex   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	wolfEndpoint = "wolfssl-client"
	wolfSuite    = "TLS_AES_128_GCM_SHA256"
	wolfOwnCID   = "wc" // the CID the client asks the gateway to use (--cid): at most 2 bytes in this build (DTLS_CID_MAX_SIZE)
)

// wolfsslClient finds wolfSSL's example client built by
// scripts/wolfssl/build.sh (GATEWAY_WOLFSSL_CLIENT overrides) and fails the
// test with the command that builds it when there is none.
func wolfsslClient(t *testing.T) (bin, version string) {
	t.Helper()
	bin = os.Getenv("GATEWAY_WOLFSSL_CLIENT")
	if bin == "" {
		var stderr bytes.Buffer
		cmd := exec.Command("../scripts/wolfssl/build.sh", "--cached")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("wolfSSL's example client is missing: %s(%v)", stderr.String(), err)
		}
		bin = strings.TrimSpace(string(out))
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("wolfSSL's example client: %v: run 'sudo scripts/wolfssl/build.sh' or 'make test' as root", err)
	}
	v, _ := os.ReadFile(filepath.Join(filepath.Dir(bin), "VERSION"))
	return bin, strings.TrimSpace(string(v))
}

// runWolfSSL runs the client against addr (DTLS 1.3: -u -v 4, PSK: -s) and
// returns its output. It runs in its own directory: the client looks for
// ./certs/dh2048.pem there at start.
func runWolfSSL(t *testing.T, bin string, port int, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]string{bin, "-u", "-v", "4", "-s", "-h", "127.0.0.1", "-p", fmt.Sprint(port)}, args...)
	if stdbuf, err := exec.LookPath("stdbuf"); err == nil {
		// Unbuffered, so that what it printed survives a kill on timeout.
		all = append([]string{stdbuf, "-o0"}, all...)
	}
	cmd := exec.CommandContext(ctx, all[0], all[1:]...)
	cmd.Dir = filepath.Dir(bin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("wolfSSL client still running after 30 s: %w", ctx.Err())
	}
	return o.String(), e.String(), err
}

var sendingCID = regexp.MustCompile(`Sending CID is ([0-9a-f]+)`)

// TestWolfSSLClientThroughGateway: wolfSSL's example client (Debian's
// wolfssl source package, DTLS 1.3, PSK, CIDs) registers through the real
// gateway binary on both data planes: a DTLS 1.3 psk_dhe_ke handshake with
// an implementation not written here, the Register reaching the backend
// byte for byte and the backend's 2.01 reaching the client byte for byte
// (L1: ep matches the identity's endpoint; L4), Connection IDs checked on
// the wire in both directions, a NAT rebinding after the handshake that
// only the CID can survive, a client KeyUpdate (RFC 9147 §8), close_notify,
// and psk_ke refused for the low-entropy test key (R2, R3).
func TestWolfSSLClientThroughGateway(t *testing.T) {
	bin, version := wolfsslClient(t)
	t.Logf("wolfSSL %s: %s", version, bin)
	if m, err := lwm2m.Inspect(wolfRegister); err != nil || m.Kind != lwm2m.Register ||
		m.Params.Endpoint != wolfEndpoint || m.Params.Lifetime != 300*time.Second {
		t.Fatalf("wolfRegister is not the Register the test means: %+v, %v", m, err)
	}
	backend := newCoAPBackend(t)
	keys := fmt.Sprintf(`keys:
  - identity: %q
    key_hex: %q
    endpoint: %q
    allow_low_entropy: true   # wolfSSL's compiled-in test key: 8 distinct byte values (R2)
`, wolfIdentity, wolfKeyHex, wolfEndpoint)

	for _, plane := range []string{"lean", "pion"} {
		t.Run(plane, func(t *testing.T) {
			g := startGateway(t, fmt.Sprintf(`
listeners: [{address: "127.0.0.1:0"}]
backends: {dm: {address: %q}}
store: {path: keys.yaml}
sessions: {data_plane: %s, drain_timeout: 3s}
dtls: {connection_id_length: %d}
`, backend.addr(), plane, gatewayCIDLength), keys)
			cases := []struct {
				name      string
				args      []string
				rebind    bool // the relay moves the client to a new port after the handshake
				cid       bool
				keyUpdate bool // -I: KeyUpdate before the Register, which is sent again after the reply
			}{
				{"psk_dhe_ke with CIDs and a NAT rebinding", []string{"--cid", wolfOwnCID}, true, true, false},
				{"KeyUpdate", []string{"-I", "--cid", wolfOwnCID}, false, true, true},
				{"without CIDs", nil, false, false, false},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					relay := newWireRelay(t, g.addr, tc.rebind)
					before := backend.count()
					closed := g.countLogs("session closed", map[string]string{"reason": "device closed the session"})
					stdout, stderr, err := runWolfSSL(t, bin, relay.addr().Port, tc.args...)
					if err != nil {
						t.Fatalf("client: %v\nstdout: %q\nstderr: %q", err, stdout, stderr)
					}
					for _, want := range []string{"SSL version is DTLSv1.3", "SSL cipher suite is " + wolfSuite} {
						if !strings.Contains(stdout, want) {
							t.Fatalf("client output lacks %q: %q", want, stdout)
						}
					}
					registers := 1
					if tc.keyUpdate {
						registers = 2 // -I writes the message again after the reply
					}
					got := backend.wait(t, before+registers)
					for i, d := range got[before:] {
						if !bytes.Equal(d.request, wolfRegister) {
							t.Fatalf("backend datagram %d: %q, want the client's Register %q", i, d.request, wolfRegister)
						}
					}
					reply := got[before].reply
					if !bytes.Contains([]byte(stdout), append(append([]byte("\n"), reply...), '\n')) {
						t.Fatalf("client did not print the backend's reply %q byte for byte: %q", reply, stdout)
					}
					g.waitLog(t, "session established", map[string]string{"remote": relay.upAddr(0),
						"version": "dtls1.3", "suite": wolfSuite, "mode": "psk_dhe_ke", "data_plane": plane})
					g.waitLogCount(t, "session closed", map[string]string{"reason": "device closed the session"}, closed+1)
					checkWire(t, relay, stdout, tc.cid, tc.rebind, tc.keyUpdate)
				})
			}

			t.Run("psk_ke refused (R2, R3)", func(t *testing.T) {
				relay := newWireRelay(t, g.addr, false)
				before := backend.count()
				stdout, stderr, err := runWolfSSL(t, bin, relay.addr().Port, "-K", "--cid", wolfOwnCID)
				if err == nil || !strings.Contains(stdout+stderr, "received alert fatal error") {
					t.Fatalf("psk_ke handshake: %v, want a fatal alert\nstdout: %q\nstderr: %q", err, stdout, stderr)
				}
				g.waitLog(t, "handshake refused", map[string]string{"remote": relay.upAddr(0), "error": "psk_ke"})
				if n := backend.count(); n != before {
					t.Fatalf("backend got %d datagrams from a refused handshake", n-before)
				}
			})

			// R9: neither the identity nor the key appears in any log line.
			for _, l := range g.logLines() {
				line := fmt.Sprint(l)
				for _, secret := range []string{"Client_identity", wolfKeyHex} {
					if strings.Contains(line, secret) {
						t.Fatalf("R9: log line leaks %q: %s", secret, line)
					}
				}
			}
		})
	}
}

// checkWire checks the records the relay saw. With CIDs, every record of
// the application epochs (3, and 4 after a KeyUpdate) carries the CID the
// other side issued: the gateway's (as the client printed it) from the
// client, the client's own (wolfOwnCID) from the gateway; without them no
// record carries one. After a rebinding the gateway answered at the new
// port; after a KeyUpdate the client wrote in epoch 4.
func checkWire(t *testing.T, relay *wireRelay, stdout string, cid, rebind, keyUpdate bool) {
	t.Helper()
	fromClient, toClient, errs := relay.wire()
	if len(errs) > 0 {
		t.Fatalf("relay: %v", errs)
	}
	var gatewayCID, clientCID []byte
	if cid {
		m := sendingCID.FindStringSubmatch(stdout)
		if !strings.Contains(stdout, "CID extension was negotiated") || m == nil {
			t.Fatalf("client negotiated no CID: %q", stdout)
		}
		// The client prints each byte with %x (no leading zero): take the
		// CID from its first record that carries one, and check that it
		// prints so.
		gatewayCID = firstCID(fromClient, gatewayCIDLength)
		var printed strings.Builder
		for _, b := range gatewayCID {
			fmt.Fprintf(&printed, "%x", b)
		}
		if gatewayCID == nil || printed.String() != m[1] {
			t.Fatalf("client records carry CID %x, the client says it sends %s", gatewayCID, m[1])
		}
		clientCID = []byte(wolfOwnCID)
	} else if strings.Contains(stdout, "CID") {
		t.Fatalf("client without --cid mentions a CID: %q", stdout)
	}
	epoch4 := false
	check := func(dir string, d []byte, want []byte) int {
		recs, err := splitRecords(d, len(want))
		if err != nil {
			t.Fatalf("%s datagram %x: %v", dir, d, err)
		}
		n := 0
		for _, r := range recs {
			if !r.unified || r.epochBits == 2 {
				continue // epoch 0 (plaintext) and the handshake epoch
			}
			n++
			epoch4 = epoch4 || (dir == "client" && r.epochBits == 0)
			if r.hasCID != (want != nil) || !bytes.Equal(r.cid, want) {
				t.Fatalf("%s record in epoch …%d carries CID %x, want %x", dir, r.epochBits, r.cid, want)
			}
		}
		return n
	}
	fromClientApp, toClientApp, viaNew := 0, 0, 0
	for _, d := range fromClient {
		fromClientApp += check("client", d, gatewayCID)
	}
	for _, d := range toClient {
		toClientApp += check("gateway", d.data, clientCID)
		if d.via == 1 {
			viaNew++
		}
	}
	if fromClientApp == 0 || toClientApp == 0 {
		t.Fatalf("no application-epoch records on the wire: %d from the client, %d from the gateway", fromClientApp, toClientApp)
	}
	if rebind && viaNew == 0 {
		t.Fatal("the gateway never answered at the client's new port: the session did not follow its CID")
	}
	if keyUpdate && !epoch4 {
		t.Fatal("no record from the client in epoch 4: the KeyUpdate did not take effect")
	}
	t.Logf("wire: %d client / %d gateway application records, CIDs %x / %x, %d datagrams to the new port",
		fromClientApp, toClientApp, gatewayCID, clientCID, viaNew)
}

// gatewayCIDLength is the length of the CIDs the gateway issues in this
// test (dtls.connection_id_length): the length is not on the wire.
const gatewayCIDLength = 8

// firstCID is the CID of the first unified-header record with the C bit in
// datagrams, nil if none has one.
func firstCID(datagrams [][]byte, cidLen int) []byte {
	for _, d := range datagrams {
		recs, _ := splitRecords(d, cidLen)
		for _, r := range recs {
			if r.hasCID {
				return r.cid
			}
		}
	}
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
