package pgtest

import (
	"fmt"
	"strings"
	"testing"
)

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
