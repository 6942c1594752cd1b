package pskcli

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lwm2m-gateway/gateway/internal/pgtest"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/importer"
	"github.com/lwm2m-gateway/gateway/pskstore/postgres"
	"github.com/lwm2m-gateway/gateway/pskstore/pskstoretest"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// pgEnv is a PostgreSQL key store in a schema of its own with two
// identities, and a gateway configuration naming it through store.dsn_env;
// sealed under a KEK when asked.
type pgEnv struct {
	dir, config, kekFile, dsn, schema string
	kek                               *sealed.KEK
	initial                           []pskstore.Key
}

// pgDSNVar is the variable the test configurations name in store.dsn_env.
const pgDSNVar = "GATEWAY_PSK_TEST_DSN"

func newPGEnv(t *testing.T, sealedStore bool) *pgEnv {
	t.Helper()
	e := &pgEnv{dir: t.TempDir()}
	e.schema, e.dsn = pgtest.Schema(t)
	t.Setenv(pgDSNVar, e.dsn)
	e.config = filepath.Join(e.dir, "gateway.yaml")
	writeFile(t, filepath.Join(e.dir, "tag.key"), []byte("0123456789abcdef-tag-secret"))
	cfg := "backends: {dm: {address: \"127.0.0.1:5683\"}, bs: {address: \"127.0.0.1:5783\"}}\ndefault_backend: dm\n" +
		"store:\n  type: postgres\n  dsn_env: " + pgDSNVar + "\n  tag_key_file: tag.key\n"
	if sealedStore {
		e.kekFile = filepath.Join(e.dir, "kek")
		e.kek = writeKEK(t, e.kekFile)
		cfg += "  kek_file: kek\n"
	}
	writeFile(t, e.config, []byte(cfg))
	a := pskstoretest.NewKey(t, []byte("device-0001"))
	a.Endpoint, a.ServerName = "urn:dev:0001", "gw.example.com"
	b := pskstoretest.NewKey(t, []byte("device-0002"))
	b.Endpoint, b.Backend = "urn:dev:0002", "bs"
	e.initial = []pskstore.Key{a, b}
	if err := e.open(t, e.kek).PutMany(context.Background(), e.initial, nil); err != nil {
		t.Fatal(err)
	}
	return e
}

// open opens the store as a gateway configured with kek would, closed at
// cleanup.
func (e *pgEnv) open(t *testing.T, kek *sealed.KEK) *postgres.Store {
	t.Helper()
	s, err := e.tryOpen(kek)
	if err != nil {
		t.Fatalf("the gateway would not open the store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (e *pgEnv) tryOpen(kek *sealed.KEK) (*postgres.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return postgres.Open(ctx, e.dsn, postgres.WithKEK(kek), postgres.WithLookupTimeout(10*time.Second))
}

func (e *pgEnv) keys(t *testing.T) []pskstore.Key {
	t.Helper()
	keys, err := e.open(t, e.kek).Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func (e *pgEnv) key(t *testing.T, identity string) (pskstore.Key, bool) {
	t.Helper()
	k, err := e.open(t, e.kek).Lookup(context.Background(), []byte(identity))
	if errors.Is(err, pskstore.ErrUnknownIdentity) {
		return k, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return k, true
}

// watch returns the changes a gateway replica sees from now on.
func (e *pgEnv) watch(t *testing.T) <-chan pskstore.Change {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := e.open(t, e.kek).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func expectChange(t *testing.T, ch <-chan pskstore.Change, kind pskstore.ChangeKind, identity []byte) {
	t.Helper()
	select {
	case c := <-ch:
		if c.Kind != kind || !bytes.Equal(c.Identity, identity) {
			t.Fatalf("change %v %q, want %v %q", c.Kind, c.Identity, kind, identity)
		}
	case <-time.After(2 * time.Second): // R10
		t.Fatalf("no change within 2s, want %v %q", kind, identity)
	}
}

// rawKEKIDs returns the kek_id column of every row, by identity.
func (e *pgEnv) rawKEKIDs(t *testing.T) map[string]string {
	t.Helper()
	c, err := pgx.Connect(context.Background(), pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	rows, err := c.Query(context.Background(), `SELECT identity, kek_id FROM `+e.schema+`.psk_keys`)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string)
	var id, kek []byte
	if _, err := pgx.ForEachRow(rows, []any{&id, &kek}, func() error { out[string(id)] = hex.EncodeToString(kek); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// secrets are every key the test knows, for leak checks.
func (e *pgEnv) secrets(t *testing.T, r pskResult) [][]byte {
	var out [][]byte
	for _, k := range e.initial {
		out = append(out, k.Secret)
	}
	return append(out, printedKeys(t, r.stdout)...)
}

func (e *pgEnv) run(t *testing.T, stdin string, args ...string) pskResult {
	t.Helper()
	args = append(args[:1:1], append([]string{"--config", e.config}, args[1:]...)...)
	r := runPSK(t, stdin, args...)
	checkNoLeak(t, r, e.secrets(t, r)...)
	if stdin != "" {
		checkNoLeak(t, r, []byte(strings.TrimSpace(stdin)))
	}
	return r
}

// TestPSKPostgresGenAdd: gen, add and add --from-csv write sealed keys to
// the PostgreSQL store the configuration names; what the store refuses
// (an identity or key material already stored) is refused naming the key,
// and nothing is written.
func TestPSKPostgresGenAdd(t *testing.T) {
	e := newPGEnv(t, true)
	ch := e.watch(t)

	r := e.run(t, "", "gen", "--identity", "dev-gen", "--endpoint", "urn:dev:gen", "--server-name", "gw.example.com")
	r.expect(t, 0, []string{"identity      dev-gen", "shown once"},
		[]string{`added identity "dev-gen"`, "to the PostgreSQL store 127.0.0.1:", "schema " + e.schema, "sealed at rest under kek " + e.kek.ID()})
	printed := printedKeys(t, r.stdout)
	if k, ok := e.key(t, "dev-gen"); !ok || len(printed) != 1 || !bytes.Equal(k.Secret, printed[0]) || k.ServerName != "gw.example.com" {
		t.Fatalf("stored key %+v is not the printed one", k)
	}
	expectChange(t, ch, pskstore.Added, []byte("dev-gen"))

	key := randomKey(t)
	r = e.run(t, hex.EncodeToString(key)+"\n", "add", "--identity", "dev-add", "--endpoint", "urn:dev:add", "--key-format", "hex", "--backend", "bs")
	r.expect(t, 0, nil, []string{`added identity "dev-add"`})
	if k, ok := e.key(t, "dev-add"); !ok || !bytes.Equal(k.Secret, key) || k.Backend != "bs" {
		t.Fatalf("add stored %+v", k)
	}
	expectChange(t, ch, pskstore.Added, []byte("dev-add"))

	// Refused by the store: nothing written, the key named, no key shown.
	r = e.run(t, hex.EncodeToString(randomKey(t)), "add", "--identity", "dev-add", "--endpoint", "e", "--key-format", "hex")
	r.expect(t, 1, nil, []string{`identity "dev-add": already exists (rotate replaces its key`})
	r = e.run(t, hex.EncodeToString(key), "add", "--identity", "dev-same-key", "--endpoint", "e", "--key-format", "hex")
	r.expect(t, 1, nil, []string{`identity "dev-same-key": policy R4`, "same key material as identity id:"})
	r = e.run(t, "", "gen", "--identity", "dev-x", "--endpoint", "e", "--backend", "nope")
	r.expect(t, 1, nil, []string{`backend "nope" is not declared`})

	// Bulk: all or nothing, in one PutMany.
	csv := filepath.Join(e.dir, "devices.csv")
	var rows strings.Builder
	rows.WriteString("identity,key_hex,endpoint,server_name\n")
	for i := range 25 {
		fmt.Fprintf(&rows, "dev-csv-%02d,%s,urn:dev:csv-%02d,gw.example.com\n", i, hex.EncodeToString(randomKey(t)), i)
	}
	writeFile(t, csv, []byte(rows.String()))
	r = e.run(t, "", "add", "--from-csv", csv)
	r.expect(t, 0, nil, []string{"writing 25 keys to the PostgreSQL store", "writing keys: 25/25 (100%)", "added 25 identities"})
	if n := len(e.keys(t)); n != 2+2+25 {
		t.Fatalf("%d keys after add --from-csv, want 29", n)
	}
	if ids := e.rawKEKIDs(t); ids["dev-csv-07"] != e.kek.ID() {
		t.Errorf("bulk key sealed under %q, want kek %s", ids["dev-csv-07"], e.kek.ID())
	}
	writeFile(t, csv, []byte("identity,key_hex,endpoint\n"+
		"dev-new-1,"+hex.EncodeToString(randomKey(t))+",urn:dev:n1\n"+
		"dev-csv-03,"+hex.EncodeToString(randomKey(t))+",urn:dev:n2\n"))
	r = e.run(t, "", "add", "--from-csv", csv)
	r.expect(t, 1, nil, []string{`line 3: identity "dev-csv-03": already exists`, "nothing written"})
	if _, ok := e.key(t, "dev-new-1"); ok {
		t.Error("a refused bulk add wrote keys")
	}
}

// TestPSKPostgresManage: list, show, export, rotate, revoke and import on
// the PostgreSQL store; every change reaches a watching replica within 2s
// (R10) and touches no other identity.
func TestPSKPostgresManage(t *testing.T) {
	e := newPGEnv(t, true)
	ch := e.watch(t)

	r := e.run(t, "", "list")
	r.expect(t, 0, []string{"IDENTITY", "device-0001", "gw.example.com", "device-0002", "bs"},
		[]string{"2 identities in the PostgreSQL store", "sealed at rest under kek"})
	checkNoLeak(t, pskResult{stderr: r.stdout}, e.secrets(t, pskResult{})...)
	r = e.run(t, "", "show", "device-0001")
	r.expect(t, 0, []string{`identity           "device-0001"`, "key                32 bytes, sealed at rest under kek " + e.kek.ID()}, nil)
	checkNoLeak(t, pskResult{stderr: r.stdout}, e.secrets(t, pskResult{})...)
	e.run(t, "", "show", "device-0009").expect(t, 1, nil, []string{`identity "device-0009" not found in the PostgreSQL store`})
	r = e.run(t, "", "export", "--format", "csv", "device-0002")
	r.expect(t, 0, []string{"device-0002,,", hex.EncodeToString(e.initial[1].Secret)}, []string{"1 PLAINTEXT keys"})

	r = e.run(t, "", "rotate", "device-0001")
	r.expect(t, 0, []string{"new key, shown once"}, []string{`rotated identity "device-0001"`, "every gateway replica closes its sessions under the old key"})
	expectChange(t, ch, pskstore.Rotated, []byte("device-0001"))
	k, _ := e.key(t, "device-0001")
	if printed := printedKeys(t, r.stdout); len(printed) != 1 || !bytes.Equal(k.Secret, printed[0]) || k.ServerName != "gw.example.com" {
		t.Fatal("the stored key is not the printed new key, or the bindings changed")
	}

	r = e.run(t, "", "revoke", "device-0001")
	r.expect(t, 0, nil, []string{`revoked identity "device-0001"`, "every gateway replica closes its sessions within seconds (R10)"})
	expectChange(t, ch, pskstore.Revoked, []byte("device-0001"))
	e.run(t, "", "revoke", "device-0001").expect(t, 1, nil, []string{`identity "device-0001" not found`})
	if other, ok := e.key(t, "device-0002"); !ok || !other.Equal(normalized(e.initial[1])) {
		t.Error("revoke touched another identity")
	}

	// RFC 9258 import: the EPSK replaced by its imported keys, at once.
	r = e.run(t, "", "import", "--identity", "device-0002", "--client", "urn:dev:0002", "--server", "gw.example.com")
	r.expect(t, 0, []string{"HKDF_SHA256", "HKDF_SHA384"}, []string{"2 imported keys stored and the external PSK deleted from the PostgreSQL store"})
	epsk := e.initial[1].Clone()
	epsk.ServerName = "gw.example.com" // the imported keys are bound to --server (R5)
	want, err := importer.Import(epsk, importer.Context("urn:dev:0002", "gw.example.com"), importer.DTLSTargets())
	if err != nil {
		t.Fatal(err)
	}
	expectChange(t, ch, pskstore.Revoked, []byte("device-0002"))
	for range want {
		if c := <-ch; c.Kind != pskstore.Added {
			t.Fatalf("change %v after an import, want Added", c.Kind)
		}
	}
	if _, ok := e.key(t, "device-0002"); ok {
		t.Error("the EPSK is still stored (R6)")
	}
	for _, w := range want {
		if got, ok := e.key(t, string(w.Identity)); !ok || !got.Equal(w) {
			t.Errorf("imported key %x not stored as importer.Import derives it", w.Identity)
		}
	}
	imported := hex.EncodeToString(want[0].Identity)
	e.run(t, "", "rotate", "--hex", imported).expect(t, 1, nil, []string{"is an imported key (R6)"})
}

// TestPSKPostgresAudit: findings by rule over the PostgreSQL store, and
// how its keys are kept; a store whose keys do not open is a MUST finding.
func TestPSKPostgresAudit(t *testing.T) {
	t.Run("clean sealed store", func(t *testing.T) {
		e := newPGEnv(t, true)
		e.run(t, "", "audit").expect(t, 0, []string{"audit: 2 keys in the PostgreSQL store", "0 MUST findings, 0 SHOULD findings, 0 store warnings"}, nil)
	})
	t.Run("look-alike identity and plaintext keys", func(t *testing.T) {
		e := newPGEnv(t, false)
		k := pskstoretest.NewKey(t, []byte("DEVICE-0001"))
		if err := e.open(t, nil).Put(context.Background(), k); err != nil {
			t.Fatal(err)
		}
		e.run(t, "", "audit").expect(t, 0, []string{`R7    SHOULD keys[1] identity "device-0001"`, "plaintext at rest", "1 SHOULD findings", "1 store warnings"}, nil)
	})
	t.Run("another kek", func(t *testing.T) {
		e := newPGEnv(t, true)
		writeKEK(t, e.kekFile)
		r := e.run(t, "", "audit")
		r.expect(t, 1, []string{"-     MUST   ", "sealed: wrong key-encryption key", "1 MUST findings"}, []string{"the gateway refuses this key store"})
	})
	t.Run("dsn with a password in the configuration", func(t *testing.T) {
		e := newPGEnv(t, true)
		cfg, _ := os.ReadFile(e.config)
		cfg = bytes.Replace(cfg, []byte("dsn_env: "+pgDSNVar), []byte(fmt.Sprintf("dsn: %q", e.dsn+"&password=s3cret")), 1)
		writeFile(t, e.config, cfg)
		r := e.run(t, "", "audit")
		r.expect(t, 0, []string{"store.dsn holds a password in the configuration file", "1 store warnings"}, nil)
		if strings.Contains(r.stdout+r.stderr, "s3cret") {
			t.Error("audit shows the password")
		}
	})
}

// TestPSKPostgresRekey: rekey seals a plaintext PostgreSQL store, then moves
// it to another KEK, in one transaction; afterwards only the new KEK opens
// it, no session is closed, and the command says to restart every replica.
func TestPSKPostgresRekey(t *testing.T) {
	e := newPGEnv(t, false)
	ch := e.watch(t)
	kek1File, kek2File := filepath.Join(e.dir, "kek1"), filepath.Join(e.dir, "kek2")
	kek1, kek2 := writeKEK(t, kek1File), writeKEK(t, kek2File)

	r := e.run(t, "", "rekey", "--new-kek-file", kek1File)
	r.expect(t, 0, nil, []string{"re-sealed 2 keys in the PostgreSQL store", "under kek " + kek1.ID(), "found 2 plaintext.", "every gateway replica"})
	for id, k := range e.rawKEKIDs(t) {
		if k != kek1.ID() {
			t.Errorf("%s under kek %q after rekey, want %s", id, k, kek1.ID())
		}
	}
	// The configuration now names kek1; rekey to kek2.
	cfg, _ := os.ReadFile(e.config)
	writeFile(t, e.config, append(cfg, "  kek_file: kek1\n"...))
	e.run(t, "", "rekey", "--new-kek-file", kek2File).expect(t, 0, nil, []string{"found 2 sealed under kek " + kek1.ID() + "."})
	s := e.open(t, kek2)
	for _, k := range e.initial {
		if got, err := s.Lookup(context.Background(), k.Identity); err != nil || !bytes.Equal(got.Secret, k.Secret) {
			t.Fatalf("Lookup under the new kek: %v", err)
		}
	}
	if _, err := e.tryOpen(kek1); !errors.Is(err, sealed.ErrWrongKEK) {
		t.Errorf("Open with the old kek after rekey: %v, want ErrWrongKEK", err)
	}
	// No change published by the rekeys: the first change a replica sees is
	// a marker written after them (waiting on an event, not on a timer).
	marker := pskstoretest.NewKey(t, []byte("marker"))
	if err := s.Put(context.Background(), marker); err != nil {
		t.Fatal(err)
	}
	expectChange(t, ch, pskstore.Added, marker.Identity)
	// The configuration still names kek1: the store does not open, nothing changes.
	before := e.rawKEKIDs(t)
	e.run(t, "", "rekey", "--new-kek-file", kek1File).expect(t, 1, nil, []string{"wrong key-encryption key", "sealed under kek " + kek2.ID()})
	if after := e.rawKEKIDs(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Error("a failed rekey changed the store")
	}
}
