package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/internal/pgtest"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/postgres"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// pgDSNVar is the variable the test configurations name in store.dsn_env.
const pgDSNVar = "GATEWAY_PSK_TEST_DSN"

// pgConfig is a configuration naming a PostgreSQL store of the test's own
// (through store.dsn_env) that holds keys, sealed under a KEK.
func pgConfig(t *testing.T, keys ...pskstore.Key) (cfgPath, schema string) {
	t.Helper()
	schema, dsn := pgtest.Schema(t)
	t.Setenv(pgDSNVar, dsn)
	dir := t.TempDir()
	kek := writeKEK(t, filepath.Join(dir, "kek"))
	cfgPath = filepath.Join(dir, "gateway.yaml")
	writeFile(t, cfgPath, []byte("backends: {dm: {address: \"127.0.0.1:5683\"}}\nstore:\n  type: postgres\n  dsn_env: "+pgDSNVar+"\n  kek_file: kek\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, dsn, postgres.WithKEK(kek))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put(ctx, keys...); err != nil {
		t.Fatal(err)
	}
	return cfgPath, schema
}

// TestCheckConfigPostgres: check-config opens the PostgreSQL store, counts
// its keys, and fails naming an unset store.dsn_env; so does the psk tool,
// which opens the store as serve does and tags identities with the tag
// key the database keeps.
func TestCheckConfigPostgres(t *testing.T) {
	cfgPath, schema := pgConfig(t, pskstoretestKey(t, "device-0001"), pskstoretestKey(t, "device-0002"))
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", cfgPath}, nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "postgres store with 2 keys") {
		t.Fatalf("check-config: exit %d\n%s%s", code, out.String(), errb.String())
	}
	r := runPSK(t, "", "list", "--config", cfgPath)
	r.expect(t, 0, []string{"device-0001", "device-0002"}, []string{"2 identities in the PostgreSQL store", "schema " + schema, "sealed at rest under kek"})
	if strings.Contains(r.stderr, "note: generated") {
		t.Error("a tag key file generated for a PostgreSQL store, which keeps its own")
	}
	t.Setenv(pgDSNVar, "")
	out.Reset()
	errb.Reset()
	if code := run([]string{"check-config", cfgPath}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "store.dsn_env: environment variable "+pgDSNVar+" is not set") {
		t.Fatalf("check-config without the DSN: exit %d\n%s%s", code, out.String(), errb.String())
	}
	runPSK(t, "", "list", "--config", cfgPath).expect(t, 1, nil, []string{"store.dsn_env: environment variable " + pgDSNVar + " is not set"})
}

// TestPostgresIdentityLimitAgrees: config refuses what the PostgreSQL store
// cannot keep, by the store's own limit.
func TestPostgresIdentityLimitAgrees(t *testing.T) {
	if config.MaxPostgresIdentityLength != postgres.MaxIdentityLen {
		t.Fatalf("config.MaxPostgresIdentityLength %d, postgres.MaxIdentityLen %d", config.MaxPostgresIdentityLength, postgres.MaxIdentityLen)
	}
}
