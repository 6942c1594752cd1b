package pskcli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/internal/cli"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/postgres"
	"github.com/lwm2m-gateway/gateway/pskstore/pskstoretest"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// pskResult is what one in-process `gateway psk …` run produced.
type pskResult struct {
	code           int
	stdout, stderr string
}

// runPSK runs `gateway psk args…` in process on stores opened by
// testWiring, with the exit status and error lines cmd/gateway gives
// (cli.Exit).
func runPSK(t *testing.T, stdin string, args ...string) pskResult {
	t.Helper()
	return runPSKOn(t, strings.NewReader(stdin), args...)
}

func runPSKOn(t *testing.T, stdin io.Reader, args ...string) pskResult {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Exit(&errb, "gateway psk", Run(testWiring, cli.IO{Stdin: stdin, Stdout: &out, Stderr: &errb}, args))
	return pskResult{code: code, stdout: out.String(), stderr: errb.String()}
}

// testWiring opens stores as cmd/gateway's wiring does (openStore), from
// the same pieces: the tool never opens a store itself, and these tests
// need stores opened like the gateway's. cmd/gateway's own tests run the
// tool on the real wiring (its psk_test.go); the tag key is expected to
// exist here (generating one is the wiring's, tested there).
var testWiring = Config{Open: testOpen, LoadKEK: testLoadKEK}

func testOpen(cfg *config.Config, o OpenOptions) (*Store, error) {
	ks := &Store{Config: cfg.Store, Policy: pskstore.Options{MaxIdentityLen: cfg.DTLS.MaxIdentityLength}}
	if o.Plaintext {
		ks.Config.InsecurePlaintextKeys = true
	}
	var err error
	if ks.KEK, err = testLoadKEK(cfg.Store.KEKFile, cfg.Store.KEKEnv); err != nil {
		return nil, err
	}
	tagKey := cfg.Store.TagKeyFile
	if tagKey == "" && cfg.Store.Type != config.StorePostgres {
		tagKey = filepath.Join(filepath.Dir(cfg.Store.Path), "tag.key")
	}
	if tagKey != "" {
		secret, err := os.ReadFile(tagKey)
		if err != nil {
			return nil, fmt.Errorf("the tests keep a tag key: %w", err)
		}
		ks.Policy.Tagger = pskstore.NewTagger(bytes.TrimSpace(secret))
	}
	if cfg.Store.Type == config.StorePostgres {
		dsn := cfg.Store.DSN
		if cfg.Store.DSNEnv != "" {
			dsn = os.Getenv(cfg.Store.DSNEnv)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := postgres.Open(ctx, dsn, postgres.WithLookupTimeout(time.Duration(cfg.Store.LookupTimeout)), postgres.WithPolicy(ks.Policy),
			postgres.WithKEK(ks.KEK), postgres.WithInsecurePlaintextKeys(ks.Config.InsecurePlaintextKeys))
		if err != nil {
			return ks, err
		}
		if ks.Policy.Tagger == nil {
			ks.Policy.Tagger = pskstore.NewTagger(s.TagKey())
		}
		ks.Store, ks.Where, ks.Shared = s, "the PostgreSQL store "+s.Location(), true
		return ks, nil
	}
	ks.Where = cfg.Store.Path
	ks.Store, err = file.Open(cfg.Store.Path, file.WithPolicy(ks.Policy), file.WithKEK(ks.KEK),
		file.WithInsecurePlaintextKeys(ks.Config.InsecurePlaintextKeys), file.WithCreate(o.Create))
	return ks, err
}

func testLoadKEK(path, env string) (*sealed.KEK, error) {
	switch {
	case path != "":
		return sealed.ReadKEKFile(path)
	case env != "":
		return sealed.KEKFromEnv(env)
	}
	return nil, nil
}

// pskEnv is a key store with two identities, a gateway configuration that
// names it, and, when sealed, a key-encryption key.
type pskEnv struct {
	dir, keys, config, kekFile string
	kek                        *sealed.KEK
	initial                    []pskstore.Key
	secrets                    [][]byte // every key seen, for leak checks
	arg                        string   // set by a case's setup for its args
}

func newPSKEnv(t *testing.T, sealedStore bool) *pskEnv {
	t.Helper()
	e := &pskEnv{dir: t.TempDir()}
	e.keys = filepath.Join(e.dir, "keys.yaml")
	e.config = filepath.Join(e.dir, "gateway.yaml")
	tagKey := filepath.Join(e.dir, "tag.key")
	writeFile(t, tagKey, []byte("0123456789abcdef-tag-secret"))
	cfg := "backends: {dm: {address: \"127.0.0.1:5683\"}, bs: {address: \"127.0.0.1:5783\"}}\ndefault_backend: dm\n" +
		"store:\n  path: keys.yaml\n  tag_key_file: tag.key\n"
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
	e.save(t, e.initial)
	return e
}

func (e *pskEnv) save(t *testing.T, keys []pskstore.Key) {
	t.Helper()
	if err := file.Save(e.keys, keys, file.WithKEK(e.kek)); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		e.secrets = append(e.secrets, k.Secret)
	}
}

// load reads the store as the gateway would.
func (e *pskEnv) load(t *testing.T) []pskstore.Key {
	t.Helper()
	data, err := os.ReadFile(e.keys)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := file.Parse(data, file.WithKEK(e.kek))
	if err != nil {
		t.Fatalf("the gateway would not load the store: %v", err)
	}
	for _, k := range keys {
		e.secrets = append(e.secrets, k.Secret)
	}
	return keys
}

func (e *pskEnv) key(t *testing.T, identity string) (pskstore.Key, bool) {
	t.Helper()
	for _, k := range e.load(t) {
		if string(k.Identity) == identity {
			return k, true
		}
	}
	return pskstore.Key{}, false
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKEK(t *testing.T, path string) *sealed.KEK {
	t.Helper()
	for {
		m := make([]byte, sealed.KEKSize)
		rand.Read(m)
		if k, err := sealed.NewKEK(m); err == nil {
			writeFile(t, path, []byte(hex.EncodeToString(m)+"\n"))
			return k
		}
	}
}

func randomKey(t *testing.T) []byte {
	t.Helper()
	s, err := pskstore.GenerateSecret(0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var keyHexLine = regexp.MustCompile(`(?m)^key_hex +([0-9a-f]+)$`)

// printedKeys returns the keys of the key blocks in stdout.
func printedKeys(t *testing.T, stdout string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, m := range keyHexLine.FindAllStringSubmatch(stdout, -1) {
		b, err := hex.DecodeString(m[1])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// checkNoLeak fails if stderr shows any key the test has seen, in any
// common encoding (R9: keys never in errors or logs).
func checkNoLeak(t *testing.T, r pskResult, secrets ...[]byte) {
	t.Helper()
	for _, s := range secrets {
		if len(s) < 8 {
			continue
		}
		for _, form := range []string{hex.EncodeToString(s), strings.ToUpper(hex.EncodeToString(s)), base64.StdEncoding.EncodeToString(s),
			base64.RawStdEncoding.EncodeToString(s), string(s), fmt.Sprint(s), cArray("psk_key", s)} {
			if strings.Contains(r.stderr, form) {
				t.Fatalf("stderr shows a key:\n%s", r.stderr)
			}
		}
	}
}

func (r pskResult) expect(t *testing.T, code int, stdout, stderr []string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stdout {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
		}
	}
	for _, s := range stderr {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

// pskCase is one run of a table test.
type pskCase struct {
	name   string
	sealed bool
	setup  func(t *testing.T, e *pskEnv) // optional, before the run
	stdin  string
	args   func(e *pskEnv) []string
	code   int
	stdout []string
	stderr []string
	// unchanged: the key file must be byte for byte what it was.
	unchanged bool
	check     func(t *testing.T, e *pskEnv, r pskResult)
}

func runPSKCases(t *testing.T, cases []pskCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newPSKEnv(t, tc.sealed)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			before, _ := os.ReadFile(e.keys)
			r := runPSK(t, tc.stdin, tc.args(e)...)
			r.expect(t, tc.code, tc.stdout, tc.stderr)
			if after, _ := os.ReadFile(e.keys); tc.unchanged && !bytes.Equal(before, after) {
				t.Error("the key file changed")
			}
			if tc.check != nil {
				tc.check(t, e, r)
			}
			if _, err := os.Stat(e.keys); err == nil {
				data, _ := os.ReadFile(e.keys)
				if keys, err := file.Parse(data, file.WithKEK(e.kek), file.WithInsecurePlaintextKeys(true)); err == nil {
					for _, k := range keys {
						e.secrets = append(e.secrets, k.Secret)
					}
				}
			}
			checkNoLeak(t, r, append(e.secrets, printedKeys(t, r.stdout)...)...)
			if tc.stdin != "" {
				checkNoLeak(t, r, []byte(strings.TrimSpace(tc.stdin)))
				if raw, err := hex.DecodeString(strings.TrimSpace(tc.stdin)); err == nil {
					checkNoLeak(t, r, raw)
				}
			}
		})
	}
}

// withStore and withConfig build argument lists.
func withConfig(args ...string) func(e *pskEnv) []string {
	return func(e *pskEnv) []string {
		return append(args[:1:1], append([]string{"--config", e.config}, args[1:]...)...)
	}
}

func withStore(args ...string) func(e *pskEnv) []string {
	return func(e *pskEnv) []string {
		return append(args[:1:1], append([]string{"--store", e.keys}, args[1:]...)...)
	}
}
