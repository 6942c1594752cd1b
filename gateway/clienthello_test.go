package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
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
