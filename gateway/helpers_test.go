package gateway

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"github.com/pion/dtls/v4/pkg/protocol"
	"github.com/pion/dtls/v4/pkg/protocol/extension"
	extension13 "github.com/pion/dtls/v4/pkg/protocol/extension/dtls13"
	pionhs "github.com/pion/dtls/v4/pkg/protocol/handshake"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// mapStore is a test double of KeyStore with an optional failure.
type mapStore struct {
	mu   sync.Mutex
	keys map[string]pskstore.Key
	err  error
}

func newMapStore(keys ...pskstore.Key) *mapStore {
	m := &mapStore{keys: map[string]pskstore.Key{}}
	for _, k := range keys {
		m.keys[string(k.Identity)] = k
	}
	return m
}

func (m *mapStore) Lookup(_ context.Context, id []byte) (pskstore.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return pskstore.Key{}, m.err
	}
	k, ok := m.keys[string(id)]
	if !ok {
		return pskstore.Key{}, pskstore.ErrUnknownIdentity
	}
	return k.Clone(), nil
}

func (m *mapStore) put(k pskstore.Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[string(k.Identity)] = k
}

func testKey(id string, fill byte) pskstore.Key {
	// Random, so the key passes the store's entropy screen (R2); fill only
	// keeps call sites readable.
	_ = fill
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	return pskstore.Key{Identity: []byte(id), Secret: secret, Versions: pskstore.DTLS12 | pskstore.DTLS13, Modes: pskstore.ModeDHE}
}

// echoBackend answers every datagram with "echo:" + datagram and records the
// source addresses it saw.
type echoBackend struct {
	pc   *net.UDPConn
	mu   sync.Mutex
	seen []*net.UDPAddr
}

func newEchoBackend(t *testing.T) *echoBackend {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b := &echoBackend{pc: pc}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			b.mu.Lock()
			b.seen = append(b.seen, from)
			b.mu.Unlock()
			_, _ = pc.WriteToUDP(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { _ = pc.Close() })
	return b
}

// distinctSources is the set of addresses the backend heard from.
func (b *echoBackend) distinctSources() map[string]bool {
	out := map[string]bool{}
	for _, a := range b.sources() {
		out[a.String()] = true
	}
	return out
}

func (b *echoBackend) sources() []*net.UDPAddr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*net.UDPAddr(nil), b.seen...)
}

// startServer runs a gateway on 127.0.0.1:0 in front of backend.
func startServer(t *testing.T, cfg Config) (*Server, *net.UDPAddr) {
	t.Helper()
	if cfg.Listeners == nil {
		cfg.Listeners = []Listener{{Address: "127.0.0.1:0"}}
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 5 * time.Second
	}
	if os.Getenv("GATEWAY_TEST_DATA_PLANE") == "pion" && cfg.Sessions == nil {
		// scripts/test.sh runs the package once more on the fallback
		// data plane; session snapshots and replicas exist only on the
		// lean plane (New refuses them on pion), so their tests keep it.
		cfg.DataPlane = DataPlanePion
	}
	if cfg.Logger == nil && os.Getenv("GATEWAY_TEST_DEBUG") != "" {
		cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zap.DebugLevel))
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-errc
	})
	return srv, srv.Addrs()[0].(*net.UDPAddr)
}

// client describes a test DTLS client.
type client struct {
	id, key    []byte
	hash       crypto.Hash
	version    protocol.Version
	pskKEOnly  bool
	suites     []ciphersuite.ID
	serverName string
	noCID      bool
}

func (c client) dial(ctx context.Context, addr *net.UDPAddr) (*dtls.Conn, error) {
	conn, err := dtls.Dial("udp", addr, c.options()...)
	if err != nil {
		return nil, err
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}

// options are the pion client options of c.
func (c client) options() []dtls.ClientOption {
	suites := c.suites
	if suites == nil {
		if c.version == protocol.Version1_2 {
			suites = []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM_8}
		} else {
			suites = []ciphersuite.ID{ciphersuite.TLS_AES_128_GCM_SHA256}
		}
	}
	version := c.version
	if version == 0 {
		version = protocol.Version1_3
	}
	opts := []dtls.ClientOption{
		dtls.WithPSK(func() ([]dtls.PSK, error) {
			return []dtls.PSK{{Identity: c.id, Key: c.key, Hash: c.hash}}, nil
		}, nil),
		dtls.WithCipherSuites(suites...),
		dtls.WithEllipticCurves(elliptic.X25519),
		dtls.WithMinVersion(version),
		dtls.WithMaxVersion(version),
	}
	if c.serverName != "" {
		opts = append(opts, dtls.WithServerName(c.serverName))
	}
	if !c.noCID {
		opts = append(opts, dtls.WithConnectionID(dtls.RandomCIDGenerator(4), dtls.CIDPathMigrationUnsafe))
	}
	if c.pskKEOnly {
		opts = append(opts, dtls.WithClientHelloMessageHook(offerOnlyPSKKE))
	}
	return opts
}

// mustDial completes a handshake or fails the test; the connection closes
// at the end of the test.
func (c client) mustDial(t *testing.T, addr *net.UDPAddr) *dtls.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.dial(ctx, addr)
	if err != nil {
		t.Fatalf("handshake as %q: %v", c.id, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// offerOnlyPSKKE rewrites the psk_key_exchange_modes extension to psk_ke only
// (R3 tests); pion computes the binders after this hook.
func offerOnlyPSKKE(h pionhs.MessageClientHello) pionhs.Message {
	out := make([]extension.Value, 0, len(h.Extensions))
	for _, e := range h.Extensions {
		if e.ExtensionType() == extension.TypePSKKeyExchangeModes {
			e = &extension13.PSKKeyExchangeModes{Modes: []extension13.PSKKeyExchangeMode{extension13.PSKKE}}
		}
		out = append(out, e)
	}
	h.Extensions = out
	return &h
}

// coapNON wraps payload in a CoAP NON POST without options: an LwM2M "other"
// request that the gateway forwards unchanged (L4).
func coapNON(payload []byte) []byte {
	return append([]byte{0x50, 0x02, byte(len(payload)), 0x01, 0xff}, payload...)
}

// roundTrip sends payload as a CoAP message and expects the echo backend's
// answer, byte for byte.
func roundTrip(t *testing.T, conn *dtls.Conn, payload []byte) {
	t.Helper()
	msg := coapNON(payload)
	if _, err := conn.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 70000)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if want := append([]byte("echo:"), msg...); !bytes.Equal(buf[:n], want) {
		t.Fatalf("got %q, want %q", buf[:n], want)
	}
}

// checkUpstreamsOnOwnLoop fails t for every session of srv with an
// upstream socket that another event loop than the session's reads, and
// returns the sessions per loop.
func checkUpstreamsOnOwnLoop(t *testing.T, srv *Server) []int {
	t.Helper()
	perLoop := make([]int, len(srv.pollers))
	for _, s := range srv.table.snapshot() {
		perLoop[s.loop]++
		s.mu.Lock()
		for _, up := range s.ups {
			if up.p != srv.pollers[s.loop] {
				t.Errorf("session on loop %d has an upstream socket on another loop", s.loop)
			}
		}
		s.mu.Unlock()
	}
	return perLoop
}
