package gateway

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestClientHelloWithoutCommonSuiteCreatesNoSession: a ClientHello offering
// only suites the gateway does not serve is dropped by the demultiplexer
// before any per-peer state exists.
func TestClientHelloWithoutCommonSuiteCreatesNoSession(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("dev", 1)
	k.Legacy = true
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c := client{id: k.Identity, key: k.Secret, version: protocol.Version1_2,
		suites: []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_256_CCM_8}} // not served
	if _, err := c.dial(ctx, addr); err == nil {
		t.Fatal("handshake without a common suite succeeded")
	}
	if n := srv.stats.dropped[dropNoCommonSuite].Load(); n == 0 {
		t.Fatal("hello not counted as no_common_suite")
	}
	if srv.Stats().Sessions != 0 {
		t.Fatal("a session was created for a hello the gateway cannot serve")
	}
	// The same device with a served suite gets in.
	roundTrip(t, (client{id: k.Identity, key: k.Secret, version: protocol.Version1_2}).mustDial(t, addr), []byte("ok"))
}

// rawHello is a DTLS 1.2 ClientHello record (RFC 6347 §4.2.2) offering
// suites, with the given extensions block (nil: none at all, which RFC
// 5246 §7.4.1.2 allows), in one record with sequence number seq.
func rawHello(seq byte, suites []uint16, extensions []byte) []byte {
	body := []byte{0xfe, 0xfd}
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0, 0)                // session_id, cookie
	body = append(body, byte(len(suites)*2>>8), byte(len(suites)*2))
	for _, s := range suites {
		body = append(body, byte(s>>8), byte(s))
	}
	body = append(body, 1, 0) // compression: null
	if extensions != nil {
		body = append(body, byte(len(extensions)>>8), byte(len(extensions)))
		body = append(body, extensions...)
	}
	n := len(body)
	hs := []byte{handshakeClientHello, byte(n >> 16), byte(n >> 8), byte(n), 0, 0, 0, 0, 0, byte(n >> 16), byte(n >> 8), byte(n)}
	hs = append(hs, body...)
	rec := []byte{contentTypeHandshake, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, seq, byte(len(hs) >> 8), byte(len(hs))}
	return append(rec, hs...)
}

// TestHelloRefusedWithoutPerPeerState (issue 9.7): a ClientHello without an
// extensions block (pion cannot serve one) and one offering no suite the
// gateway serves are each answered with one plaintext handshake_failure
// alert that echoes the hello's record sequence number, counted under
// their own drop reasons (no_extensions, no_common_suite, also in the
// metrics) and logged at info, and leave no per-peer state: no handshake,
// no session, no per-address rate limiter. The old gateway dropped both
// silently. The same address then gets in with a served hello.
func TestHelloRefusedWithoutPerPeerState(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("dev", 1)
	k.Legacy = true
	core, logs := observer.New(zap.InfoLevel)
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()},
		Logger: zap.New(core)})
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	served := uint16(ciphersuite.TLS_PSK_WITH_AES_128_CCM_8)
	notServed := uint16(ciphersuite.TLS_PSK_WITH_AES_256_CCM_8)
	supportedGroups := []byte{0, extSupportedGroups, 0, 4, 0, 2, 0, 0x1d} // x25519
	for _, tc := range []struct {
		name   string
		hello  []byte
		reason dropReason
		log    string
	}{
		{"no extensions", rawHello(7, []uint16{served}, nil), dropNoExtensions, "client hello without extensions: not supported"},
		{"no served suite", rawHello(9, []uint16{notServed}, supportedGroups), dropNoCommonSuite, "client hello offers no cipher suite this gateway serves"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := pc.WriteToUDP(tc.hello, addr); err != nil {
				t.Fatal(err)
			}
			_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 2048)
			n, err := pc.Read(buf)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			want := []byte{contentTypeAlert, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, tc.hello[10], 0, 2, alertFatal, 40}
			if !bytes.Equal(buf[:n], want) {
				t.Fatalf("answer %x, want handshake_failure %x", buf[:n], want)
			}
			if got := srv.stats.dropped[tc.reason].Load(); got != 1 {
				t.Fatalf("%s drops: %d, want 1", dropReasonNames[tc.reason], got)
			}
			if got := droppedMetric(t, srv, dropReasonNames[tc.reason]); got != 1 {
				t.Fatalf("gateway_dropped_datagrams_total{reason=%q} = %v, want 1", dropReasonNames[tc.reason], got)
			}
			lines := logs.FilterMessage(tc.log).FilterField(zap.Stringer("remote", pc.LocalAddr().(*net.UDPAddr).AddrPort())).All()
			if len(lines) != 1 || lines[0].Level != zap.InfoLevel {
				t.Fatalf("log lines %q for the client: %v, want one at info; logs: %v", tc.log, lines, logs.All())
			}
			st := srv.Stats()
			limiters := srv.admission.perIP.used() + srv.admission.perPrefix.used()
			if st.Sessions != 0 || st.Embryonic != 0 || limiters != 0 {
				t.Fatalf("per-peer state: %d sessions, %d embryonic, %d rate-limit buckets charged", st.Sessions, st.Embryonic, limiters)
			}
		})
	}
	if srv.stats.dropped[dropNotHello].Load() != 0 {
		t.Fatal("a refused hello was also counted as not a ClientHello")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := dtls.Client(pc, addr, (client{id: k.Identity, key: k.Secret, version: protocol.Version1_2}).options()...)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		t.Fatalf("a served hello from the same address: %v", err)
	}
	defer conn.Close()
	roundTrip(t, conn, []byte("in"))
}

// droppedMetric is the value of gateway_dropped_datagrams_total for reason.
func droppedMetric(t *testing.T, srv *Server, reason string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(srv.Collector()); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "gateway_dropped_datagrams_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no gateway_dropped_datagrams_total series for reason %q", reason)
	return 0
}
