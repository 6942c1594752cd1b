package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseFull(t *testing.T) {
	got, err := Parse(readTestdata(t, "full.yaml"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		Listeners: []Listener{
			{Address: ":5684", MissingSNI: SNIAllow},
			{Address: "[::1]:5685", MissingSNI: SNIRequire},
		},
		Backends: map[string]Backend{
			"bootstrap": {Address: "10.0.0.2:5683"},
			"dm":        {Address: "lwm2m-server.example.com:5683"},
		},
		DefaultBackend: "dm",
		Store: Store{Type: StoreFile, Path: "keys.yaml", TagKeyFile: "/etc/gateway/tag.key",
			KEKFile: "/etc/gateway/kek", InsecurePlaintextKeys: true, LookupTimeout: Duration(2 * time.Second)},
		DTLS: DTLS{
			Versions:           []Version{DTLS13},
			Groups:             []Group{GroupX25519MLKEM768, GroupX25519, GroupP256, GroupP384},
			CipherSuites:       []CipherSuite{TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256},
			ConnectionIDLength: 0,
			MTU:                1400,
			HandshakeTimeout:   Duration(15 * time.Second),
			MaxIdentityLength:  256,
		},
		Sessions: Sessions{
			IdleTimeout:        Duration(150 * time.Minute),
			OnePerIdentity:     false,
			DrainTimeout:       0,
			RegistrationGrace:  DefaultRegistrationGrace,
			DataPlane:          DataPlanePion,
			EventLoops:         1,
			CheckpointInterval: DefaultCheckpointInterval,
			ParkAfter:          Duration(30 * time.Second),
		},
		Log:     Log{Level: LevelDebug, Format: FormatConsole, Identities: IdentitiesClear, FlushInterval: Duration(250 * time.Millisecond)},
		Limits:  Default().Limits,
		Admin:   Default().Admin,
		Cluster: Default().Cluster,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse(full.yaml) =\n%+v\nwant\n%+v", got, want)
	}
	if names := got.BackendNames(); !reflect.DeepEqual(names, []string{"bootstrap", "dm"}) {
		t.Errorf("BackendNames() = %q", names)
	}
	if d := got.Deprecated(); len(d) != 1 || !strings.Contains(d[0], "sessions.park_after") {
		t.Errorf("Deprecated() = %q, want the obsolete park_after reported", d)
	}
	if d := Default().Deprecated(); len(d) != 0 {
		t.Errorf("defaults report obsolete settings: %q", d)
	}
}

func TestParseDefaults(t *testing.T) {
	withDM := func(mod func(c *Config)) *Config {
		c := Default()
		c.Backends = map[string]Backend{"dm": {Address: "127.0.0.1:5683"}}
		c.DefaultBackend = "dm"
		if mod != nil {
			mod(c)
		}
		return c
	}
	const dm = "backends: {dm: {address: \"127.0.0.1:5683\"}}\n"
	tests := []struct {
		name string
		yaml string
		want *Config
	}{
		{"minimal file", string(readTestdata(t, "minimal.yaml")), withDM(nil)},
		{"empty values mean defaults", dm + `
listeners: []
store: {type: ""}
dtls: {versions: [], groups: [], cipher_suites: []}
log: {level: "", format: "", identities: ""}
`, withDM(nil)},
		{"null values mean defaults", dm + `
listeners:
dtls: {mtu: ~, handshake_timeout: ~}
sessions:
`, withDM(nil)},
		{"listener without missing_sni", dm + `listeners: [{address: "127.0.0.1:0"}]`,
			withDM(func(c *Config) { c.Listeners = []Listener{{Address: "127.0.0.1:0", MissingSNI: SNIAllow}} })},
		{"explicit zero and false stay", dm + `
dtls: {connection_id_length: 0}
sessions: {one_per_identity: false, drain_timeout: 0s}
`, withDM(func(c *Config) {
			c.DTLS.ConnectionIDLength = 0
			c.Sessions.OnePerIdentity = false
			c.Sessions.DrainTimeout = 0
		})},
		{"unquoted versions", dm + `dtls: {versions: [1.3, 1.2]}`,
			withDM(func(c *Config) { c.DTLS.Versions = []Version{DTLS13, DTLS12} })},
		{"trailing document separator", dm + "---\n", withDM(nil)},
		{"memory store ignores path", dm + `store: {type: memory}`,
			withDM(func(c *Config) { c.Store.Type = StoreMemory })},
		{"kek from the environment", dm + `store: {kek_env: GATEWAY_KEK, insecure_plaintext_keys: false}`,
			withDM(func(c *Config) { c.Store.KEKEnv = "GATEWAY_KEK" })},
		{"postgres store, dsn from the environment", dm + `store: {type: postgres, dsn_env: GATEWAY_PG_DSN}`,
			withDM(func(c *Config) { c.Store.Type, c.Store.DSNEnv = StorePostgres, "GATEWAY_PG_DSN" })},
		{"postgres store, sealed, every field", string(readTestdata(t, "postgres.yaml")),
			withDM(func(c *Config) {
				c.Store = Store{Type: StorePostgres, Path: DefaultStorePath, DSN: "host=/run/postgresql dbname=gateway user=gateway",
					LookupTimeout: Duration(250 * time.Millisecond), TagKeyFile: "tag.key", KEKEnv: "GATEWAY_KEK", InsecurePlaintextKeys: true}
			})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// TestDSNRedacted: a DSN's passwords never reach an error, whatever its
// form, and the rest of it does, to say which DSN is meant.
func TestDSNRedacted(t *testing.T) {
	for _, tt := range []struct{ dsn, want string }{
		{"postgres://gw:s3cret@db.example.com:5432/gw?sslmode=verify-full", "postgres://gw:xxxxx@db.example.com:5432/gw?sslmode=verify-full"},
		{"postgresql://gw:s3cret@h1:5432,h2:5432/gw", "postgresql://gw:xxxxx@h1:5432,h2:5432/gw"},
		{"postgres://gw:s3:cr@et@db/gw", "postgres://gw:xxxxx@et@db/gw"},
		{"postgres://db/gw?user=gw&password=s3cret&sslpassword=s3cret", "postgres://db/gw?user=gw&password=xxxxx&sslpassword=xxxxx"},
		{"postgres://gw@db/gw", "postgres://gw@db/gw"},
		{"host=db user=gw password=s3cret dbname=gw", "host=db user=gw password=xxxxx dbname=gw"},
		{"host=db password = 's3 cr\\'et' dbname=gw sslpassword=s3cret", "host=db password = xxxxx dbname=gw sslpassword=xxxxx"},
		{"host=/run/postgresql dbname=gw", "host=/run/postgresql dbname=gw"},
	} {
		got := RedactDSN(tt.dsn)
		if got != tt.want {
			t.Errorf("RedactDSN(%q) = %q, want %q", tt.dsn, got, tt.want)
		}
		if strings.Contains(got, "s3") || DSNHasPassword(tt.dsn) != (got != tt.dsn) {
			t.Errorf("RedactDSN(%q) = %q shows the password, or DSNHasPassword disagrees", tt.dsn, got)
		}
		// No error of a configuration holding it shows the password.
		for _, yml := range []string{
			"store: {dsn: %q}", // wrong store type
			"store: {type: postgres, dsn: %q, dsn_env: X}",          // both
			"store: {type: memory, dsn: %q, lookup_timeout: -1s}",   // several
			"store: {type: postgres, dsn: %q, path: [1]}\nbogus: 1", // decode errors
		} {
			_, err := Parse([]byte(dm + strings.ReplaceAll(yml, "%q", strconv.Quote(tt.dsn))))
			if err == nil {
				t.Fatalf("%s: no error", yml)
			}
			if strings.Contains(err.Error(), "s3") {
				t.Errorf("error shows the password: %v", err)
			}
		}
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	var es FieldErrors
	if err := c.Validate(); !errors.As(err, &es) || len(es) != 1 || es[0].Field != "backends" {
		t.Errorf("Default().Validate() = %v, want only a backends error", err)
	}
	c.Backends = map[string]Backend{"dm": {Address: "[2001:db8::1]:5683"}}
	if err := c.Validate(); err != nil {
		t.Errorf("Default() with one backend: Validate() = %v", err)
	}
	c.Listeners[0].Address = "[::]:1"
	if Default().Listeners[0].Address != DefaultListenAddress {
		t.Error("Default shares its listeners between calls")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	data := `
backends: {dm: {address: "127.0.0.1:5683"}}
store: {path: keys/keys.yaml, tag_key_file: tag.key, kek_file: secrets/kek}
`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := filepath.Join(dir, "keys", "keys.yaml"); c.Store.Path != want {
		t.Errorf("store.path = %q, want %q", c.Store.Path, want)
	}
	if want := filepath.Join(dir, "tag.key"); c.Store.TagKeyFile != want {
		t.Errorf("store.tag_key_file = %q, want %q", c.Store.TagKeyFile, want)
	}
	if want := filepath.Join(dir, "secrets", "kek"); c.Store.KEKFile != want {
		t.Errorf("store.kek_file = %q, want %q", c.Store.KEKFile, want)
	}

	if err := os.WriteFile(path, []byte("store: {path: /abs/keys.yaml}\nbackends: {dm: {address: \"h:1\"}}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(path); err != nil || c.Store.Path != "/abs/keys.yaml" || c.Store.TagKeyFile != "" {
		t.Errorf("Load with absolute path = %+v, %v", c, err)
	}

	if err := os.WriteFile(path, []byte("dtls: {mtu: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	var fe *FieldError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), path) {
		t.Errorf("Load(invalid) = %v, want a *FieldError naming the file", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}
}

// TestExample guards the example shipped for operators.
func TestExample(t *testing.T) {
	c, err := Load("../deploy/examples/gateway.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	// The example documents every field: the file names each yaml key.
	data, err := os.ReadFile("../deploy/examples/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range yamlKeys(reflect.TypeFor[Config]()) {
		if !strings.Contains(string(data), key+":") {
			t.Errorf("example does not mention %q", key)
		}
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want Duration
		out  string
	}{
		{"10s", Duration(10 * time.Second), "10s"},
		{"75m", Duration(75 * time.Minute), "1h15m0s"},
		{"1h30m", Duration(90 * time.Minute), "1h30m0s"},
		{"250ms", Duration(250 * time.Millisecond), "250ms"},
		{"0s", 0, "0s"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			if err := yaml.Unmarshal([]byte(tt.in), &d); err != nil {
				t.Fatal(err)
			}
			if d != tt.want {
				t.Errorf("unmarshal = %v, want %v", d, tt.want)
			}
			out, err := yaml.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(out)); got != tt.out {
				t.Errorf("marshal = %q, want %q", got, tt.out)
			}
		})
	}
	for _, bad := range []string{"10", "soon", "{a: 1}", "[1s]"} {
		var d Duration
		if err := yaml.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("unmarshal %q: no error", bad)
		}
	}
}

func TestCipherSuites(t *testing.T) {
	for _, s := range CipherSuites() {
		if s.Version() == "" {
			t.Errorf("%s has no version", s)
		}
	}
	if v := CipherSuite("TLS_NULL").Version(); v != "" {
		t.Errorf("unknown suite has version %q", v)
	}
}

// yamlKeys returns the yaml keys of every field reachable from t.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	switch t.Kind() {
	case reflect.Slice, reflect.Map, reflect.Pointer:
		return yamlKeys(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if tag := f.Tag.Get("yaml"); tag != "" {
				keys = append(keys, strings.Split(tag, ",")[0])
			}
			keys = append(keys, yamlKeys(f.Type)...)
		}
	}
	return keys
}
