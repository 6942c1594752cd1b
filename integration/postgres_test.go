package integration

import (
	"context"
	"fmt"
	"github.com/lwm2m-gateway/gateway/internal/tcpproxy"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/internal/pgtest"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/postgres"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// pgBaseDSN is the database the tests create their schemas in
// (internal/pgtest: GATEWAY_TEST_PG_DSN, or a cluster of this test binary).
func pgBaseDSN(t *testing.T) string {
	t.Helper()
	return pgtest.DSN(t)
}

// pgSchema creates a schema of the test's own, dropped at cleanup, and
// returns its name (internal/pgtest).
func pgSchema(t *testing.T) string {
	t.Helper()
	schema, _ := pgtest.Schema(t)
	return schema
}

// pgDSN is the DSN of schema, reached at addr ("" for the server of
// the test database itself), as key=value pairs.
func pgDSN(t *testing.T, schema, addr string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(pgBaseDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	host, port := cfg.Host, fmt.Sprint(cfg.Port)
	if addr != "" {
		host, port, _ = net.SplitHostPort(addr)
	}
	q := func(s string) string { return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'" }
	dsn := fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable search_path=%s", q(host), port, q(cfg.User), q(cfg.Database), schema)
	if cfg.Password != "" {
		dsn += " password=" + q(cfg.Password)
	}
	return dsn
}

// pgTarget is host:port of the server of the test database.
func pgTarget(t *testing.T) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(pgBaseDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(cfg.Host, "/") {
		t.Fatalf("the test database is on a unix socket (%s): these tests need a TCP address on loopback", cfg.Host)
	}
	return net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port))
}

// pgSite is a gateway configuration for a PostgreSQL store in schema,
// keys sealed under a KEK from the environment; every site made with the
// same schema, kek and tag key (newPskSite's) is a replica of the others.
func pgSite(t *testing.T, backend net.Addr, dsn, kek string) *pskSite {
	t.Helper()
	return pgSiteLookup(t, backend, dsn, kek, 0)
}

// pgSiteLookup is pgSite with store.lookup_timeout set (0: the default,
// 500ms, which the outage test measures against; a test that only needs
// lookups to succeed on a loaded machine gives them longer).
func pgSiteLookup(t *testing.T, backend net.Addr, dsn, kek string, lookup time.Duration) *pskSite {
	t.Helper()
	extra := "  type: postgres\n  dsn_env: TEST_GATEWAY_PG_DSN\n  kek_env: TEST_GATEWAY_KEK\n"
	if lookup > 0 {
		extra += fmt.Sprintf("  lookup_timeout: %s\n", lookup)
	}
	// Replicas on one host: each its own admin port.
	return newPskSite(t, backend, extra+"admin: {address: \"127.0.0.1:0\"}", "",
		"TEST_GATEWAY_PG_DSN="+dsn, "TEST_GATEWAY_KEK="+kek)
}

// seedPostgres stores keys in schema, sealed under kek.
func seedPostgres(t *testing.T, dsn, kekHex string, keys ...fleetKey) {
	t.Helper()
	kek, err := sealed.ParseKEK([]byte(kekHex))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, dsn, postgres.WithKEK(kek))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ks []pskstore.Key
	for _, k := range keys {
		ks = append(ks, pskstore.Key{Identity: []byte(k.identity), Secret: k.key, Endpoint: k.endpoint})
	}
	if err := s.PutMany(ctx, ks, nil); err != nil {
		t.Fatal(err)
	}
}

// noCloseOf fails if g closed a session of identity.
func noCloseOf(t *testing.T, g *gatewayProc, s *pskSite, identity string) {
	t.Helper()
	for _, l := range g.logLines() {
		if l["msg"] == "session closed" && l["identity_tag"] == s.tagger.Tag([]byte(identity)) {
			t.Fatalf("a session of %s was closed: %v", identity, l)
		}
	}
}

// TestPostgresRevokeRotateAcrossReplicasR10: two gateway processes share
// one PostgreSQL store. `gateway psk revoke` run against one replica's
// configuration closes the identity's sessions on both within 2 s; `psk
// rotate` likewise closes the sessions under the old key, the new key works
// on both, the old one on neither; other identities are untouched.
func TestPostgresRevokeRotateAcrossReplicasR10(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	dsn := pgDSN(t, pgSchema(t), "")
	kek := randomKEK(t)
	k1, k2, k3 := newFleetKey("dev-pg-revoked", ""), newFleetKey("dev-pg-kept", ""), newFleetKey("dev-pg-rotated", "")
	seedPostgres(t, dsn, kek, k1, k2, k3)
	// A lookup deadline sized for a loaded machine: the 500 ms default made
	// handshakes of a healthy store fail under CPU load.
	sa, sb := pgSiteLookup(t, backend.Addr(), dsn, kek, 10*time.Second), pgSiteLookup(t, backend.Addr(), dsn, kek, 10*time.Second)
	ga, gb := sa.start(t), sb.start(t)
	for _, g := range []*gatewayProc{ga, gb} {
		// A change committed before a replica listens is not replayed to
		// it: start once both listen.
		g.waitLog(t, "psk store: change listener connected", nil)
	}
	ctx := ctxTimeout(t, 90*time.Second)

	// dev-pg-revoked on both replicas, dev-pg-kept on A, dev-pg-rotated on B.
	d1a := dialRegistered(t, ctx, ga, k1.identity, k1.key)
	d1b := dialRegistered(t, ctx, gb, k1.identity, k1.key)
	d2 := dialRegistered(t, ctx, ga, k2.identity, k2.key)
	d3 := dialRegistered(t, ctx, gb, k3.identity, k3.key)

	t.Run("revoke", func(t *testing.T) {
		start := time.Now()
		_, stderr := sa.psk(t, 0, "revoke", k1.identity)
		if !strings.Contains(stderr, "every gateway replica closes its sessions") {
			t.Errorf("revoke said:\n%s", stderr)
		}
		for name, g := range map[string]*gatewayProc{"A (the CLI's)": ga, "B": gb} {
			if took := waitClosed(t, g, sa, k1.identity, "revoked", start); took > 2*time.Second {
				t.Errorf("replica %s closed the session %v after the revoke, want within 2s", name, took)
			}
		}
		for _, d := range []*devsim.Device{d1a, d1b} {
			if err := d.Update(ctx); err == nil {
				t.Fatal("the revoked device's Update succeeded")
			}
		}
		for i := range 3 {
			if err := d2.Update(ctx); err != nil {
				t.Fatalf("the other device's Update %d: %v", i, err)
			}
		}
		if _, err := backend.Read(ctx, k2.endpoint, "/3/0/0"); err != nil {
			t.Fatalf("backend read of the other device: %v", err)
		}
		for _, g := range []*gatewayProc{ga, gb} {
			if registers(t, ctx, g, k1) {
				t.Fatal("the revoked identity registered again")
			}
		}
		noCloseOf(t, ga, sa, k2.identity)
	})

	t.Run("rotate", func(t *testing.T) {
		start := time.Now()
		stdout, _ := sa.psk(t, 0, "rotate", k3.identity)
		newKey := keyFrom(t, stdout)
		if took := waitClosed(t, gb, sa, k3.identity, "rotated", start); took > 2*time.Second {
			t.Errorf("replica B closed the session %v after the rotation, want within 2s", took)
		}
		if err := d3.Update(ctx); err == nil {
			t.Fatal("Update on the session of the old key succeeded")
		}
		d3.Close()
		for _, g := range []*gatewayProc{gb, ga} {
			if err := dialRegistered(t, ctx, g, k3.identity, newKey).Update(ctx); err != nil {
				t.Fatalf("update with the new key: %v", err)
			}
			if registers(t, ctx, g, k3) {
				t.Fatal("the old key still works after rotation")
			}
		}
		if err := d2.Update(ctx); err != nil {
			t.Fatalf("the other device's Update: %v", err)
		}
		noCloseOf(t, ga, sa, k2.identity)
		checkLogsHoldNoKey(t, ga, k1.key, k2.key, k3.key, newKey)
		checkLogsHoldNoKey(t, gb, k1.key, k2.key, k3.key, newKey)
	})
}

// registers reports whether a device with k completes a handshake with g
// and registers; the device is closed again.
func registers(t *testing.T, ctx context.Context, g *gatewayProc, k fleetKey) bool {
	t.Helper()
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d, err := devsim.Dial(hctx, devsim.DeviceConfig{Server: g.addr.String(), Identity: []byte(k.identity), Key: k.key,
		Endpoint: k.endpoint, HandshakeTimeout: 3 * time.Second, ACKTimeout: 300 * time.Millisecond, MaxRetransmit: -1})
	if err != nil {
		return false
	}
	defer d.Close()
	_, err = d.Register(hctx)
	return err == nil
}

// TestPostgresOutage: the gateway reaches PostgreSQL through a TCP proxy
// that the test stops. The established session keeps working; a new
// handshake fails fast, as one with an unknown identity does; once the
// proxy is back, a new handshake succeeds without restarting the gateway.
func TestPostgresOutage(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	schema := pgSchema(t)
	kek := randomKEK(t)
	live, fresh := newFleetKey("dev-pg-live", ""), newFleetKey("dev-pg-fresh", "")
	seedPostgres(t, pgDSN(t, schema, ""), kek, live, fresh)
	p := newTCPProxy(t, pgTarget(t))
	s := pgSite(t, backend.Addr(), pgDSN(t, schema, p.addr), kek)
	g := s.start(t)
	ctx := ctxTimeout(t, 90*time.Second)
	d := dialRegistered(t, ctx, g, live.identity, live.key)

	// How long a refused handshake takes, for an unknown identity.
	unknown := newFleetKey("dev-pg-unknown", "")
	t0 := time.Now()
	if registers(t, ctx, g, unknown) {
		t.Fatal("an unknown identity registered")
	}
	unknownTook := time.Since(t0)

	// Refused (the port closed), then a black hole (connections accepted
	// and never answered, as in a network partition).
	for _, outage := range []struct {
		name  string
		begin func()
	}{{"refused", p.stop}, {"black hole", p.blackhole}} {
		t.Run(outage.name, func(t *testing.T) {
			outage.begin()
			for i := range 3 {
				if err := d.Update(ctx); err != nil {
					t.Fatalf("Update %d on the established session with the database down: %v", i, err)
				}
			}
			for i := range 3 {
				t0 := time.Now()
				if registers(t, ctx, g, fresh) {
					t.Fatal("a handshake succeeded with the database down")
				}
				took := time.Since(t0)
				t.Logf("handshake %d with the database down refused after %v (unknown identity: %v)", i, took, unknownTook)
				if took > time.Second+unknownTook {
					t.Errorf("handshake %d with the database down took %v to fail, want about as fast as an unknown identity (%v), within ~1s", i, took, unknownTook)
				}
			}
			g.waitLog(t, "handshake failed", map[string]string{"reason": "store_error"})

			back := time.Now()
			p.start()
			for !registers(t, ctx, g, fresh) {
				if time.Since(back) > 10*time.Second {
					t.Fatalf("no handshake succeeded within 10s of the database coming back; logs: %v", g.logLines())
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("a new handshake succeeded %v after the database came back", time.Since(back))
			if err := d.Update(ctx); err != nil {
				t.Fatalf("the established session after the outage: %v", err)
			}
		})
	}
	g.waitLog(t, "psk store: database unreachable; lookups fail until it answers", nil)
	g.waitLog(t, "psk store: database reachable again", nil)
	checkLogsHoldNoKey(t, g, live.key, fresh.key)
}

// tcpProxy stands between the gateways and PostgreSQL (internal/tcpproxy):
// stop refuses connections, blackhole accepts and never answers, start
// forwards again on the same port.
type tcpProxy struct {
	t    *testing.T
	addr string
	p    *tcpproxy.Proxy
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	tp, err := tcpproxy.New(func() (net.Conn, error) { return net.Dial("tcp", target) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.Down)
	return &tcpProxy{t: t, addr: tp.Addr(), p: tp}
}

func (p *tcpProxy) stop() { p.p.Down() }

func (p *tcpProxy) blackhole() {
	if err := p.p.Blackhole(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *tcpProxy) start() {
	if err := p.p.Up(); err != nil {
		p.t.Fatal(err)
	}
}
