package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// Issue 9.4: refuse early and consistently. Where the ClientHello already
// decides (DTLS 1.3: mode and server name), the refusal comes before any
// ServerHello; DTLS 1.2 refuses in place of the final flight. Every policy
// refusal is one handshake_failure(40) alert, and nothing is forwarded.
// The key is checked first: a client without the key learns nothing of
// the policy, nor of whether the identity exists.
//
// Issue 9.6: missing_sni: require refuses a ClientHello without SNI for
// every key, also one that names no server.

// refusal is one refused handshake and what the device must see of it.
type refusal struct {
	name        string
	c           client
	alert       int  // the gateway's plaintext alert; -1 for none (DTLS 1.2 wrong key: silence)
	serverHello bool // whether a ServerHello may reach the device (DTLS 1.2 only)
	failure     string
}

// checkRefusals runs each refused handshake through tap and checks what
// the device saw, the failure counted, and that the backend got nothing.
func checkRefusals(t *testing.T, srv *Server, tap *tapRelay, backend *echoBackend, cases []refusal) {
	t.Helper()
	for _, rc := range cases {
		t.Run(rc.name, func(t *testing.T) {
			before := srv.Stats().HandshakesFailed[rc.failure]
			// A DTLS 1.2 client with the wrong key waits for a Finished
			// that never comes: it gives up after 2.5 s.
			ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
			defer cancel()
			local, err := rc.c.attempt(ctx, tap.addr())
			if err == nil {
				t.Fatal("the client completed the handshake")
			}
			log := tap.datagrams(local)
			p := observe(log, rc.c.version)
			if p.alert != rc.alert {
				t.Fatalf("alert %d, want %d (client error: %v)", p.alert, rc.alert, err)
			}
			if n := serverHellos(log); n > 0 && !rc.serverHello {
				t.Fatalf("%d ServerHellos reached the client before the refusal", n)
			}
			if last := log[len(log)-1]; rc.alert >= 0 && (!last.toClient || last.b[0] != contentTypeAlert) {
				t.Fatalf("the alert is not the gateway's last word: %x", last.b)
			}
			for _, d := range log {
				if d.toClient && (d.b[0] == contentTypeCCS || d.b[3] != 0 || d.b[4] != 0 || isUnifiedHeader(d.b[0])) {
					t.Fatalf("the gateway sent a ChangeCipherSpec or an encrypted record: %x", d.b)
				}
			}
			waitFor(t, func() bool { return srv.Stats().HandshakesFailed[rc.failure] == before+1 },
				"failure %q counted", rc.failure)
			if n := len(backend.sources()); n != 0 {
				t.Fatalf("the backend received %d datagrams", n)
			}
		})
	}
}

// TestEarlyRefusal (issue 9.4, R3, R5): DTLS 1.3 handshakes that offer only
// psk_ke for a key that requires psk_dhe_ke, or a server name other than
// the key's, are refused with handshake_failure before any ServerHello
// (the old gateway sent its Finished first, then bad_certificate); DTLS
// 1.2 refusals end with the same alert instead of the gateway's Finished.
// A client with the wrong key and a hello the policy would refuse gets
// decrypt_error (DTLS 1.3) or silence (DTLS 1.2), like any wrong key, and
// so does an unknown identity: the binder is checked before the policy.
func TestEarlyRefusal(t *testing.T) {
	backend := newEchoBackend(t)
	dhe := testKey("dhe-only", 1)
	bound := testKey("bound", 2)
	bound.ServerName = "gw-a.example"
	wrong := testKey("wrong", 3).Secret
	srv, addr := startServer(t, Config{Store: newMapStore(dhe, bound), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()},
		HandshakeTimeout: 2 * time.Second})
	tap := newTapRelay(t, addr)
	v12 := protocol.Version1_2
	plain := []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM_8}
	ecdhe := []ciphersuite.ID{ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256}
	checkRefusals(t, srv, tap, backend, []refusal{
		{name: "R3 dtls13 psk_ke only", c: client{id: dhe.Identity, key: dhe.Secret, pskKEOnly: true}, alert: 40, failure: "policy_R3"},
		{name: "R5 dtls13 other server name", c: client{id: bound.Identity, key: bound.Secret, serverName: "gw-b.example"}, alert: 40, failure: "policy_R5"},
		{name: "R3 dtls12 plain psk without legacy", c: client{id: dhe.Identity, key: dhe.Secret, version: v12, suites: plain},
			alert: 40, serverHello: true, failure: "policy_R3"},
		{name: "R5 dtls12 other server name", c: client{id: bound.Identity, key: bound.Secret, version: v12, suites: ecdhe, serverName: "gw-b.example"},
			alert: 40, serverHello: true, failure: "policy_R5"},
		{name: "dtls13 wrong key and psk_ke only", c: client{id: dhe.Identity, key: wrong, pskKEOnly: true}, alert: 51, failure: "bad_key"},
		{name: "dtls13 wrong key and other server name", c: client{id: bound.Identity, key: wrong, serverName: "gw-b.example"}, alert: 51, failure: "bad_key"},
		{name: "dtls13 unknown identity and psk_ke only", c: client{id: []byte("nobody"), key: wrong, pskKEOnly: true}, alert: 51, failure: "unknown_identity"},
		{name: "dtls12 wrong key and plain psk without legacy", c: client{id: dhe.Identity, key: wrong, version: v12, suites: plain},
			alert: -1, serverHello: true, failure: "bad_key"},
		{name: "dtls12 wrong key and other server name", c: client{id: bound.Identity, key: wrong, version: v12, suites: ecdhe, serverName: "gw-b.example"},
			alert: -1, serverHello: true, failure: "bad_key"},
	})
	if st := srv.Stats(); st.Established != 0 || st.HandshakesOK != 0 {
		t.Fatalf("refused handshakes established %d sessions (%d ok)", st.Established, st.HandshakesOK)
	}
}

// TestMissingSNIRequiredForEveryKey (issue 9.6, R5): a listener with
// missing_sni: require refuses a ClientHello without server_name also for a
// key that names no server (the old gateway looked at the policy only for
// keys with a server_name), in both versions, and the same key with any
// server name gets in.
func TestMissingSNIRequiredForEveryKey(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("unbound", 1) // no ServerName
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()},
		Listeners: []Listener{{Address: "127.0.0.1:0", MissingSNI: SNIRequire}}})
	tap := newTapRelay(t, addr)
	ecdhe := []ciphersuite.ID{ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256}
	checkRefusals(t, srv, tap, backend, []refusal{
		{name: "dtls13 without SNI", c: client{id: k.Identity, key: k.Secret}, alert: 40, failure: "policy_R5"},
		{name: "dtls12 without SNI", c: client{id: k.Identity, key: k.Secret, version: protocol.Version1_2, suites: ecdhe},
			alert: 40, serverHello: true, failure: "policy_R5"},
	})
	roundTrip(t, (client{id: k.Identity, key: k.Secret, serverName: "any.example"}).mustDial(t, addr), []byte("dtls13 with SNI"))
	roundTrip(t, (client{id: k.Identity, key: k.Secret, version: protocol.Version1_2, suites: ecdhe, serverName: "any.example"}).mustDial(t, addr),
		[]byte("dtls12 with SNI"))
}
