package gateway

import (
	"context"
	"crypto"
	"errors"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

func TestHandshakeMatrix(t *testing.T) {
	backend := newEchoBackend(t)
	dhe := testKey("dhe-only", 1)
	ke := testKey("ke-allowed", 2)
	ke.Modes = pskstore.ModeDHE | pskstore.ModeKE
	legacy := testKey("legacy-12", 3)
	legacy.Legacy = true
	only13 := testKey("only-13", 4)
	only13.Versions = pskstore.DTLS13
	sha384 := testKey("sha384", 5)
	sha384.Hash = crypto.SHA384
	lowEntropy := testKey("low-entropy", 6)
	lowEntropy.AllowLowEntropy = true
	lowEntropy.Modes = pskstore.ModeDHE | pskstore.ModeKE
	lowEntropy.Legacy = true
	bound := testKey("bound", 7)
	bound.ServerName = "gw-a.example"

	store := newMapStore(dhe, ke, legacy, only13, sha384, lowEntropy, bound)
	srv, addr := startServer(t, Config{Store: store, Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})

	v12 := protocol.Version1_2
	tests := []struct {
		name    string
		c       client
		ok      bool
		failure string
	}{
		{name: "dtls13 psk_dhe_ke", c: client{id: dhe.Identity, key: dhe.Secret}, ok: true},
		{name: "dtls13 chacha20", c: client{id: dhe.Identity, key: dhe.Secret, suites: []ciphersuite.ID{ciphersuite.TLS_CHACHA20_POLY1305_SHA256}}, ok: true},
		{name: "dtls13 sha384 key with aes256", c: client{id: sha384.Identity, key: sha384.Secret, hash: crypto.SHA384, suites: []ciphersuite.ID{ciphersuite.TLS_AES_256_GCM_SHA384}}, ok: true},
		{name: "R3 dtls13 psk_ke allowed", c: client{id: ke.Identity, key: ke.Secret, pskKEOnly: true}, ok: true},
		{name: "R3 dtls13 psk_ke refused", c: client{id: dhe.Identity, key: dhe.Secret, pskKEOnly: true}, failure: "policy_R3"},
		{name: "R2 psk_ke refused for low-entropy key", c: client{id: lowEntropy.Identity, key: lowEntropy.Secret, pskKEOnly: true}, failure: "policy_R2"},
		{name: "dtls12 ccm8 legacy", c: client{id: legacy.Identity, key: legacy.Secret, version: v12}, ok: true},
		{name: "dtls12 ccm legacy", c: client{id: legacy.Identity, key: legacy.Secret, version: v12, suites: []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM}}, ok: true},
		{name: "dtls12 gcm legacy", c: client{id: legacy.Identity, key: legacy.Secret, version: v12, suites: []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_GCM_SHA256}}, ok: true},
		{name: "R3 dtls12 plain psk refused without legacy", c: client{id: dhe.Identity, key: dhe.Secret, version: v12}, failure: "policy_R3"},
		{name: "R3 dtls12 ecdhe_psk without legacy", c: client{id: dhe.Identity, key: dhe.Secret, version: v12, suites: []ciphersuite.ID{ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256}}, ok: true},
		{name: "R2 dtls12 plain psk refused for low-entropy key", c: client{id: lowEntropy.Identity, key: lowEntropy.Secret, version: v12}, failure: "policy_R2"},
		{name: "R3 dtls12 refused for dtls13-only identity", c: client{id: only13.Identity, key: only13.Secret, version: v12, suites: []ciphersuite.ID{ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256}}, failure: "policy_R3"},
		{name: "dtls12 without CID", c: client{id: legacy.Identity, key: legacy.Secret, version: v12, noCID: true}, ok: true},
		{name: "unknown identity", c: client{id: []byte("nobody"), key: dhe.Secret}, failure: "unknown_identity"},
		{name: "wrong key dtls13", c: client{id: dhe.Identity, key: legacy.Secret}, failure: "bad_key"},
		// DTLS 1.2 discards the undecryptable Finished silently (RFC 6347
		// §4.1.2.7): the handshake ends at its timeout, counted as bad_key.
		{name: "wrong key dtls12", c: client{id: legacy.Identity, key: dhe.Secret, version: v12}, failure: "bad_key"},
		{name: "R5 matching server name", c: client{id: bound.Identity, key: bound.Secret, serverName: "GW-A.example"}, ok: true},
		{name: "R5 missing server name allowed by listener", c: client{id: bound.Identity, key: bound.Secret}, ok: true},
		{name: "R5 other server name refused", c: client{id: bound.Identity, key: bound.Secret, serverName: "gw-b.example"}, failure: "policy_R5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.Stats()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			conn, err := tc.c.dial(ctx, addr)
			if tc.ok {
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				defer conn.Close()
				roundTrip(t, conn, []byte("hello "+tc.name))
				return
			}
			if err == nil {
				// DTLS 1.3: the client may finish before the server's
				// verdict arrives; the session must still be refused.
				defer conn.Close()
				_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
				_, _ = conn.Write([]byte("must not pass"))
				if _, rerr := conn.Read(make([]byte, 100)); rerr == nil {
					t.Fatal("refused session still forwarded data")
				}
			}
			waitFor(t, func() bool { return srv.Stats().HandshakesFailed[tc.failure] > before.HandshakesFailed[tc.failure] },
				"failure reason %q; stats %v", tc.failure, srv.Stats().HandshakesFailed)
		})
	}
}

func TestR5MissingSNIRequired(t *testing.T) {
	backend := newEchoBackend(t)
	bound := testKey("bound", 7)
	bound.ServerName = "gw-a.example"
	srv, addr := startServer(t, Config{
		Store:     newMapStore(bound),
		Backends:  map[string]string{"dm": backend.pc.LocalAddr().String()},
		Listeners: []Listener{{Address: "127.0.0.1:0", MissingSNI: SNIRequire}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if conn, err := (client{id: bound.Identity, key: bound.Secret}).dial(ctx, addr); err == nil {
		conn.Close()
	}
	waitFor(t, func() bool { return srv.Stats().HandshakesFailed["policy_R5"] == 1 }, "R5 refusal")
	if got := len(backend.sources()); got != 0 {
		t.Fatalf("backend saw %d datagrams from a refused session", got)
	}
}

func TestStoreDownFailsHandshake(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("dev", 1)
	store := newMapStore(k)
	store.err = errors.New("database unreachable")
	srv, addr := startServer(t, Config{Store: store, Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := (client{id: k.Identity, key: k.Secret}).dial(ctx, addr); err == nil {
		t.Fatal("handshake succeeded while the store is down")
	}
	waitFor(t, func() bool { return srv.Stats().HandshakesFailed["store_error"] == 1 }, "store_error counted")
	// The store recovers: the same device gets in without a restart.
	store.mu.Lock()
	store.err = nil
	store.mu.Unlock()
	conn, err := (client{id: k.Identity, key: k.Secret}).dial(ctx, addr)
	if err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	defer conn.Close()
	roundTrip(t, conn, []byte("back"))
}

func waitFor(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: "+format, args...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
