package gateway

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// TestDTLS12PrefersECDHEPSK (issue 9.5, R3): pion picks the DTLS 1.2 suite
// in the client's order, and OpenSSL-based clients (libcoap-openssl among
// them) list plain-PSK suites first. When the ClientHello also offers an
// ECDHE-PSK suite the gateway serves, that suite is chosen: a key that is
// not legacy gets in (the old gateway picked plain PSK and refused it),
// and a legacy key gets forward secrecy too. The hello's order is checked
// at a relay, so the test cannot pass because the client reordered.
func TestDTLS12PrefersECDHEPSK(t *testing.T) {
	backend := newEchoBackend(t)
	modern := testKey("modern", 1)
	legacy := testKey("legacy", 2)
	legacy.Legacy = true
	srv, addr := startServer(t, Config{Store: newMapStore(modern, legacy), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})
	tap := newTapRelay(t, addr)
	ecdhe := ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256
	for _, tc := range []struct {
		name   string
		suites []ciphersuite.ID
	}{
		{"PSK-AES128-GCM first", []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_GCM_SHA256, ecdhe}},
		{"PSK-AES128-CCM8 first", []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, ciphersuite.TLS_PSK_WITH_AES_128_CCM, ecdhe}},
	} {
		for _, k := range []struct {
			name     string
			id, secr []byte
		}{{"non-legacy key", modern.Identity, modern.Secret}, {"legacy key", legacy.Identity, legacy.Secret}} {
			t.Run(tc.name+"/"+k.name, func(t *testing.T) {
				before := srv.Stats().HandshakesOK
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				conn, local, err := (client{id: k.id, key: k.secr, version: protocol.Version1_2, suites: tc.suites}).dialFrom(ctx, tap.addr())
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				defer conn.Close()
				hellos := clientHellos(tap.datagrams(local))
				if len(hellos) == 0 {
					t.Fatal("relay saw no ClientHello")
				}
				h, verdict := parseHello(hellos[0], srv.servesSuite)
				if verdict != helloOK || len(h.suites) < 2 || ciphersuite.ID(h.suites[0]) != tc.suites[0] || !slices.Contains(h.suites, uint16(ecdhe)) {
					t.Fatalf("the client offered %x (verdict %d), want %v first and ECDHE-PSK", h.suites, verdict, tc.suites[0])
				}
				state, ok := conn.ConnectionState()
				if !ok || state.CipherSuiteID != ecdhe {
					t.Fatalf("negotiated %v, want %v", state.CipherSuiteID, ecdhe)
				}
				roundTrip(t, conn, []byte("forward secrecy"))
				srv.stats.mu.Lock()
				n := srv.stats.okBy[handshakeKind{"dtls1.2", "ecdhe_psk"}]
				srv.stats.mu.Unlock()
				if srv.Stats().HandshakesOK != before+1 || n == 0 {
					t.Fatalf("handshakes ok %d (before %d), ecdhe_psk %d", srv.Stats().HandshakesOK, before, n)
				}
			})
		}
	}
}
