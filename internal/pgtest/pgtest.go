// Package pgtest gives tests a PostgreSQL database, so `go test ./...` runs
// on a fresh checkout:
//
//   - GATEWAY_TEST_PG_DSN, when set (make test starts one cluster for every
//     package with scripts/pg.sh and sets it);
//   - otherwise, when PostgreSQL's server binaries are installed
//     (/usr/lib/postgresql/*/bin), a throwaway cluster of the test binary's
//     own, started by scripts/pg.sh in a temporary directory on first use
//     and stopped by Main when the tests are done;
//   - otherwise the tests that need a database skip, saying why; with
//     GATEWAY_REQUIRE_PG=1 (set by make test) they fail instead, so the full
//     suite never passes without them.
//
// It owns nothing of the store: tests create their own schemas in the
// database (Schema). It is for tests only.
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables read by the package.
const (
	// EnvDSN names a database to use instead of starting a cluster.
	EnvDSN = "GATEWAY_TEST_PG_DSN"
	// EnvRequire, set to 1, turns a missing PostgreSQL into a failure.
	EnvRequire = "GATEWAY_REQUIRE_PG"
)

// errNoPostgres is why the tests skip (or, required, fail).
var errNoPostgres = errors.New("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb) and " + EnvDSN +
	" is unset: install it (apt-get install -y postgresql) or run `make test`")

var cluster struct {
	once sync.Once
	dsn  string
	dir  string // of the cluster this binary started; "" when none
	err  error
}

// Main runs the tests of a package and then stops the cluster they started,
// if any. Use it as TestMain: func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }.
func Main(m *testing.M) int {
	code := m.Run()
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// DSN returns the DSN of the test database, starting the cluster on first
// use. Without PostgreSQL it skips t, or fails it under GATEWAY_REQUIRE_PG=1.
func DSN(t testing.TB) string {
	t.Helper()
	cluster.once.Do(func() { start(initdbGlob) })
	return use(t, cluster.dsn, cluster.err)
}

// Schema creates a schema of t's own in the test database, dropped with
// everything in it at cleanup, and returns its name and a DSN of the test
// database whose search_path is that schema: tests that share the database
// stay independent. Without PostgreSQL it skips or fails t, as DSN does.
func Schema(t testing.TB) (schema, dsn string) {
	t.Helper()
	base := DSN(t)
	var b [6]byte
	rand.Read(b[:])
	schema = "t_" + hex.EncodeToString(b[:])
	exec := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("pgtest: creating a schema in the test database: %v", err)
	}
	t.Cleanup(func() {
		if err := exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("pgtest: dropping schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return schema, base + " search_path=" + schema
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return schema, u.String()
}

// initdbGlob finds PostgreSQL's server binaries.
const initdbGlob = "/usr/lib/postgresql/*/bin/initdb"

// use returns dsn, or skips or fails t with err.
func use(t testing.TB, dsn string, err error) string {
	t.Helper()
	switch {
	case err == nil:
		return dsn
	case errors.Is(err, errNoPostgres) && os.Getenv(EnvRequire) != "1":
		t.Skipf("skipped: %v (%s=1 makes this a failure)", err, EnvRequire)
		return ""
	}
	t.Fatalf("pgtest: %v", err)
	return ""
}

func start(glob string) {
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		cluster.dsn = dsn
		return
	}
	if bins, _ := filepath.Glob(glob); len(bins) == 0 {
		cluster.err = errNoPostgres
		return
	}
	script, err := findScript()
	if err != nil {
		cluster.err = err
		return
	}
	dir, err := os.MkdirTemp("", "gateway-pgtest-")
	if err != nil {
		cluster.err = err
		return
	}
	cluster.dir = dir
	cmd := exec.Command(script, "start")
	cmd.Env = append(os.Environ(), "GATEWAY_PG_DIR="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		cluster.err = fmt.Errorf("scripts/pg.sh start: %w\n%s", err, stderr.Bytes())
		return
	}
	// The one line on stdout: export GATEWAY_TEST_PG_DSN='postgres://…'
	_, v, ok := strings.Cut(strings.TrimSpace(string(out)), EnvDSN+"=")
	if !ok {
		cluster.err = fmt.Errorf("scripts/pg.sh start printed %q, want an export of %s", out, EnvDSN)
		return
	}
	cluster.dsn = strings.Trim(v, "'")
}

func stop() error {
	if cluster.dir == "" {
		return nil
	}
	script, err := findScript()
	if err != nil {
		return err
	}
	cmd := exec.Command(script, "stop")
	cmd.Env = append(os.Environ(), "GATEWAY_PG_DIR="+cluster.dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/pg.sh stop: %w\n%s", err, out)
	}
	return nil
}

// findScript finds scripts/pg.sh in the module, from the test's working
// directory (the package's directory) up.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "pg.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return "", fmt.Errorf("%s not found", p)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/pg.sh not found above the working directory")
		}
		dir = parent
	}
}
