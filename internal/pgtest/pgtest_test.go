package pgtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// recorder stands in for a test, recording a skip or a failure.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(format string, a ...any)  { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) { r.failed = fmt.Sprintf(format, a...) }

// TestWithoutPostgres: without PostgreSQL the tests skip, saying why and
// how to make it a failure; under GATEWAY_REQUIRE_PG=1 they fail.
func TestWithoutPostgres(t *testing.T) {
	t.Setenv(EnvDSN, "")
	saved := cluster.err
	defer func() { cluster.err = saved }()
	start("/nonexistent/postgresql/*/bin/initdb")
	if cluster.err != errNoPostgres {
		t.Fatalf("start without PostgreSQL: %v", cluster.err)
	}
	t.Setenv(EnvRequire, "")
	r := &recorder{}
	if dsn := use(r, "", cluster.err); dsn != "" || r.failed != "" || !strings.Contains(r.skipped, "PostgreSQL is not installed") || !strings.Contains(r.skipped, EnvRequire+"=1") {
		t.Errorf("without %s: skipped %q, failed %q", EnvRequire, r.skipped, r.failed)
	}
	t.Setenv(EnvRequire, "1")
	r = &recorder{}
	if use(r, "", cluster.err); r.skipped != "" || !strings.Contains(r.failed, "PostgreSQL is not installed") {
		t.Errorf("with %s=1: skipped %q, failed %q", EnvRequire, r.skipped, r.failed)
	}
}

// TestGivenDSN: GATEWAY_TEST_PG_DSN is used as it is, no cluster started.
func TestGivenDSN(t *testing.T) {
	t.Setenv(EnvDSN, "postgres://u@127.0.0.1:1/db")
	dsn, err, dir := cluster.dsn, cluster.err, cluster.dir
	defer func() { cluster.dsn, cluster.err, cluster.dir = dsn, err, dir }()
	cluster.dsn, cluster.err, cluster.dir = "", nil, ""
	start("/nonexistent")
	if r := (&recorder{}); use(r, cluster.dsn, cluster.err) != "postgres://u@127.0.0.1:1/db" || cluster.dir != "" {
		t.Errorf("dsn %q, dir %q", cluster.dsn, cluster.dir)
	}
}

// TestSchema: a schema of the test's own, which the DSN's search_path
// selects, gone with its tables after the test.
func TestSchema(t *testing.T) {
	base := DSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	query := func(dsn, sql string, args ...any) (n int) {
		t.Helper()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if strings.HasPrefix(sql, "SELECT") {
			err = c.QueryRow(ctx, sql, args...).Scan(&n)
		} else {
			_, err = c.Exec(ctx, sql, args...)
		}
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	var schema string
	t.Run("own schema", func(t *testing.T) {
		var dsn string
		schema, dsn = Schema(t)
		query(dsn, "CREATE TABLE probe (n int)")
		if n := query(base, "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'probe'", schema); n != 1 {
			t.Errorf("the table is not in schema %s", schema)
		}
	})
	if n := query(base, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", schema); schema == "" || n != 0 {
		t.Errorf("schema %q left after the test", schema)
	}
}
