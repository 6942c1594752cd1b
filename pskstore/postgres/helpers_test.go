package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap/zaptest"

	"github.com/lwm2m-gateway/gateway/internal/pgtest"
	"github.com/lwm2m-gateway/gateway/internal/tcpproxy"
	"github.com/lwm2m-gateway/gateway/pskstore"
)

// testTagger tags identities in every test store, so tests can predict tags.
var testTagger = pskstore.NewTagger([]byte("postgres test tagger secret"))

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// baseDSN is the database the tests create their schemas in.
func baseDSN(t testing.TB) string {
	t.Helper()
	return pgtest.DSN(t)
}

// admin returns a connection to the base database, closed at cleanup.
func admin(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, baseDSN(t))
	if err != nil {
		t.Fatalf("connecting to the test database: %v", err)
	}
	t.Cleanup(func() { closeConn(c) })
	return c
}

// db is one test's own schema, dropped at cleanup, so tests are independent.
type db struct {
	schema string
	base   *pgconn.Config
}

func newDB(t testing.TB) *db {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:])
	c := admin(t)
	ctx := context.Background()
	if _, err := c.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, baseDSN(t))
		if err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer closeConn(c)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	cfg, err := pgconn.ParseConfig(baseDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	return &db{schema: schema, base: cfg}
}

// dsn is the base DSN with the test's schema as search path and app as
// application_name, so a test can find its store's connections.
func (d *db) dsn(t testing.TB, app string) string {
	t.Helper()
	dsn := baseDSN(t)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", d.schema)
		q.Set("application_name", app)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + d.schema + " application_name='" + app + "'"
}

// dsnVia is the DSN of d reached through a proxy listening at addr.
func (d *db) dsnVia(addr, app string) string {
	host, port, _ := net.SplitHostPort(addr)
	q := func(s string) string {
		return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `'`, `\'`) + "'"
	}
	dsn := fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable search_path=%s application_name=%s",
		host, port, q(d.base.User), q(d.base.Database), d.schema, q(app))
	if d.base.Password != "" {
		dsn += " password=" + q(d.base.Password)
	}
	return dsn
}

// open opens a store on d, closed at cleanup.
func (d *db) open(t testing.TB, app string, opts ...Option) *Store {
	t.Helper()
	return openDSN(t, d.dsn(t, app), opts...)
}

// testLookupTimeout is the lookup deadline of the test stores.
const testLookupTimeout = 10 * time.Second

func openDSN(t testing.TB, dsn string, opts ...Option) *Store {
	t.Helper()
	// A lookup deadline sized for a loaded test machine: the 500 ms default
	// failed lookups of healthy stores under CPU load. Outage tests set
	// their own.
	opts = append([]Option{WithPolicy(pskstore.Options{Tagger: testTagger}), WithLogger(zaptest.NewLogger(t)), WithLookupTimeout(testLookupTimeout)}, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// appName is a unique application_name for one store of one test.
func appName(t testing.TB, role string) string {
	var b [4]byte
	rand.Read(b[:])
	return "pgtest-" + role + "-" + hex.EncodeToString(b[:])
}

// terminate ends every backend whose application_name is app and waits
// until they are gone; it returns how many there were.
func terminate(t testing.TB, app string) int {
	t.Helper()
	c := admin(t)
	ctx := context.Background()
	var n int
	if err := c.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d backends of %s still alive", left, app)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proxy stands between a store and PostgreSQL, so a test can take the
// database away (refused or black-holed) and bring it back (internal/tcpproxy).
type proxy struct {
	t    testing.TB
	addr string
	p    *tcpproxy.Proxy
}

func newProxy(t testing.TB, d *db) *proxy {
	t.Helper()
	target := d.base
	tp, err := tcpproxy.New(func() (net.Conn, error) {
		if strings.HasPrefix(target.Host, "/") {
			return net.Dial("unix", filepath.Join(target.Host, fmt.Sprintf(".s.PGSQL.%d", target.Port)))
		}
		return net.Dial("tcp", net.JoinHostPort(target.Host, fmt.Sprint(target.Port)))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.Down)
	return &proxy{t: t, addr: tp.Addr(), p: tp}
}

func (p *proxy) down() { p.p.Down() }

func (p *proxy) blackhole() {
	if err := p.p.Blackhole(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *proxy) up() {
	if err := p.p.Up(); err != nil {
		p.t.Fatal(err)
	}
}

// newKeys returns n keys named prefix-0000000… with 32 random bytes each.
// Unlike pskstore.GenerateSecret it does not screen them (R2), which is
// slow for a million keys; a random 32-byte key fails the screen with
// probability about 2^-44.
func newKeys(t testing.TB, prefix string, n int) []pskstore.Key {
	t.Helper()
	keys := make([]pskstore.Key, n)
	material := make([]byte, 32*n)
	rand.Read(material)
	for i := range keys {
		keys[i] = pskstore.Key{Identity: fmt.Appendf(nil, "%s-%07d", prefix, i), Secret: material[32*i : 32*i+32 : 32*i+32]}
	}
	return keys
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// nextChange waits up to within for a change on ch.
func nextChange(t testing.TB, ch <-chan pskstore.Change, within time.Duration) pskstore.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return c
	case <-time.After(within):
		t.Fatalf("no change within %v", within)
	}
	return pskstore.Change{}
}

func expectChange(t testing.TB, ch <-chan pskstore.Change, within time.Duration, kind pskstore.ChangeKind, identity []byte) {
	t.Helper()
	c := nextChange(t, ch, within)
	if c.Kind != kind || string(c.Identity) != string(identity) {
		t.Fatalf("change = %v %q, want %v %q", c.Kind, c.Identity, kind, identity)
	}
}

func expectNoChange(t testing.TB, ch <-chan pskstore.Change, within time.Duration) {
	t.Helper()
	select {
	case c := <-ch:
		t.Fatalf("unexpected change %v %q", c.Kind, c.Identity)
	case <-time.After(within):
	}
}
