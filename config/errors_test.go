package config

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// dm is a valid backends section, prepended to cases that do not set their own.
const dm = "backends:\n  dm:\n    address: \"127.0.0.1:5683\"\n"

// badCases each break exactly one field. Lines count from the first line of
// yaml (after dm when prepended).
var badCases = []struct {
	name   string
	yaml   string // dm is prepended unless the case declares backends
	field  string
	value  string
	line   int
	msgHas string
}{
	{"unknown field", "dtls:\n  mtu: 1200\n  mut: 1300\n", "dtls.mut", "", 6, "unknown field, did you mean mtu?"},
	{"unknown top-level field", "backend: dm\n", "backend", "", 4, "unknown field, did you mean backends?"},
	{"top-level typo", "stroe: {path: k.yaml}\n", "stroe", "", 4, "unknown field, did you mean store?"},
	{"nested typo", "store:\n  kek_flie: kek\n", "store.kek_flie", "", 5, "unknown field, did you mean kek_file?"},
	{"unknown field in list item", "listeners:\n  - address: \":5684\"\n    sni: x\n", "listeners[0].sni", "", 6, "unknown field"},
	{"unknown field unlike any", "limits: {frobnication_level: 3}\n", "limits.frobnication_level", "", 4, "unknown field"},
	{"zero max handshakes", "limits: {max_handshakes: 0}\n", "limits.max_handshakes", "0", 4, "greater than 0"},
	{"negative prefix rate", "limits: {prefix_handshake_rate: -5}\n", "limits.prefix_handshake_rate", "-5", 4, "0 means unlimited"},
	{"negative prefix burst", "limits: {prefix_handshake_burst: -1}\n", "limits.prefix_handshake_burst", "-1", 4, "negative"},
	{"ipv4 prefix 33", "limits: {prefix_length_ipv4: 33}\n", "limits.prefix_length_ipv4", "33", 4, "between 1 and 32"},
	{"ipv6 prefix 0", "limits: {prefix_length_ipv6: 0}\n", "limits.prefix_length_ipv6", "0", 4, "between 1 and 128"},
	{"negative new handshake rate", "limits: {new_handshake_rate: -1}\n", "limits.new_handshake_rate", "-1", 4, "0 means unlimited"},
	{"zero recent window", "limits: {recent_handshake_window: 0s}\n", "limits.recent_handshake_window", "0s", 4, "greater than 0"},
	{"zero recent addresses", "limits: {max_recent_addresses: 0}\n", "limits.max_recent_addresses", "0", 4, "greater than 0"},
	{"not utf-8", "log: {level: \"de\xffbug\"}\n", "", "", 4, "not valid utf-8 at column 17"},
	{"bad duration", "sessions:\n  idle_timeout: 75\n", "sessions.idle_timeout", "75", 5, "duration"},
	{"bad duration word", "dtls:\n  handshake_timeout: soon\n", "dtls.handshake_timeout", "soon", 5, "duration"},
	{"zero idle timeout", "sessions:\n  idle_timeout: 0s\n", "sessions.idle_timeout", "0s", 5, "greater than 0"},
	{"negative handshake timeout", "dtls: {handshake_timeout: -1s}\n", "dtls.handshake_timeout", "-1s", 4, "greater than 0"},
	{"negative drain timeout", "sessions: {drain_timeout: -5s}\n", "sessions.drain_timeout", "-5s", 4, "negative"},
	{"unknown data plane", "sessions: {data_plane: fast}\n", "sessions.data_plane", "fast", 4, "lean"},
	{"zero event loops", "sessions: {event_loops: 0}\n", "sessions.event_loops", "0", 4, "between 1 and 256"},
	{"too many event loops", "sessions: {event_loops: 1000}\n", "sessions.event_loops", "1000", 4, "between 1 and 256"},
	{"snapshot without kek", "sessions: {snapshot: /var/lib/gw/sessions.snap}\n", "sessions.snapshot", "/var/lib/gw/sessions.snap", 4, "key-encryption key"},
	{"zero checkpoint interval", "sessions: {checkpoint_interval: 0s}\n", "sessions.checkpoint_interval", "0s", 4, "greater than 0"},
	{"ipv6 without brackets", "listeners:\n  - address: \"::1:5684\"\n", "listeners[0].address", "::1:5684", 5, "host:port"},
	{"address without port", "listeners:\n  - address: \":5684\"\n  - address: \"127.0.0.1\"\n", "listeners[1].address", "127.0.0.1", 6, "host:port"},
	{"empty listener address", "listeners:\n  - missing_sni: require\n", "listeners[0].address", "", 5, "required"},
	{"duplicate listener", "listeners: [{address: \":5684\"}, {address: \":5684\"}]\n", "listeners[1].address", ":5684", 4, "duplicate"},
	{"bad host", "listeners: [{address: \"bad host:5684\"}]\n", "listeners[0].address", "bad host:5684", 4, "dns name"},
	{"named port", "listeners: [{address: \":coap\"}]\n", "listeners[0].address", ":coap", 4, "number"},
	{"port 70000", "backends:\n  dm:\n    address: \"127.0.0.1:70000\"\n", "backends.dm.address", "127.0.0.1:70000", 3, "out of range 1..65535"},
	{"listener port 70000", "listeners: [{address: \"[::1]:70000\"}]\n", "listeners[0].address", "[::1]:70000", 4, "out of range 0..65535"},
	{"backend port 0", "backends: {dm: {address: \"127.0.0.1:0\"}}\n", "backends.dm.address", "127.0.0.1:0", 1, "out of range"},
	{"backend without host", "backends: {dm: {address: \":5683\"}}\n", "backends.dm.address", ":5683", 1, "host is required"},
	{"backend without address", "backends: {dm: {}}\n", "backends.dm.address", "", 1, "required"},
	{"bad backend name", "backends: {\"d m\": {address: \"h:1\"}}\n", "backends.d m", "d m", 1, "backend name"},
	{"no backends", "backends: {}\n", "backends", "", 1, "at least one"},
	{"missing_sni", "listeners: [{address: \":5684\", missing_sni: maybe}]\n", "listeners[0].missing_sni", "maybe", 4, `"allow" or "require"`},
	{"unknown group", "dtls:\n  groups: [x25519, x448]\n", "dtls.groups[1]", "x448", 5, "unknown group"},
	{"duplicate group", "dtls:\n  groups: [p256, p256]\n", "dtls.groups[1]", "p256", 5, "duplicate"},
	{"unknown version", "dtls:\n  versions: [\"1.0\"]\n", "dtls.versions[0]", "1.0", 5, "unknown dtls version"},
	{"unknown cipher suite", "dtls:\n  cipher_suites:\n    - TLS_AES_128_GCM_SHA256\n    - TLS_RSA_WITH_AES_128_CBC_SHA\n    - TLS_PSK_WITH_AES_128_CCM_8\n", "dtls.cipher_suites[1]", "TLS_RSA_WITH_AES_128_CBC_SHA", 7, "unknown cipher suite"},
	{"no suite for a version", "dtls:\n  cipher_suites: [TLS_PSK_WITH_AES_128_CCM_8]\n", "dtls.cipher_suites", "", 5, "dtls version 1.3"},
	{"default_backend naming nothing", "default_backend: nope\n", "default_backend", "nope", 4, "declared: dm"},
	{"two backends and no default", "backends:\n  dm: {address: \"h:1\"}\n  bs: {address: \"h:2\"}\n", "default_backend", "", 0, "declared: bs, dm"},
	{"unknown store type", "store: {type: sql}\n", "store.type", "sql", 4, `"file", "memory" or "postgres"`},
	{"empty store path", "store:\n  path: \"\"\n", "store.path", "", 5, "required"},
	{"kek file and env", "store:\n  kek_file: kek\n  kek_env: KEK\n", "store.kek_env", "KEK", 6, "not both"},
	{"kek env not a name", "store: {kek_env: \"1KEK\"}\n", "store.kek_env", "1KEK", 4, "environment variable name"},
	{"kek env with a dash", "store: {kek_env: \"MY-KEK\"}\n", "store.kek_env", "MY-KEK", 4, "environment variable name"},
	{"kek for a memory store", "store: {type: memory, kek_file: kek}\n", "store.kek_file", "kek", 4, "only for store types \"file\" and \"postgres\""},
	{"kek env for a memory store", "store: {type: memory, kek_env: KEK}\n", "store.kek_env", "KEK", 4, "only for store types \"file\" and \"postgres\""},
	{"postgres without a dsn", "store:\n  type: postgres\n", "store.dsn_env", "", 4, "needs store.dsn_env (preferred: the DSN may hold a password) or store.dsn"},
	{"dsn and dsn_env", "store:\n  type: postgres\n  dsn: \"postgres://gw:s3cret@db/gw\"\n  dsn_env: PG_DSN\n", "store.dsn_env", "PG_DSN", 7, "not both"},
	{"dsn_env not a name", "store: {type: postgres, dsn_env: \"PG-DSN\"}\n", "store.dsn_env", "PG-DSN", 4, "environment variable name"},
	{"dsn neither url nor pairs", "store: {type: postgres, dsn: \"db.example.com\"}\n", "store.dsn", "db.example.com", 4, "postgres:// URL or key=value pairs"},
	{"dsn of another scheme", "store: {type: postgres, dsn: \"mysql://gw:s3cret@db/gw\"}\n", "store.dsn", "mysql://gw:s3cret@db/gw", 4, "starts with postgres://"},
	{"dsn for a file store", "store:\n  dsn: \"postgres://gw:s3cret@db/gw?sslmode=verify-full\"\n", "store.dsn", "postgres://gw:xxxxx@db/gw?sslmode=verify-full", 5, "only for store type \"postgres\""},
	{"dsn_env for a memory store", "store: {type: memory, dsn_env: PG_DSN}\n", "store.dsn_env", "PG_DSN", 4, "only for store type \"postgres\""},
	{"zero lookup timeout", "store: {type: postgres, dsn_env: PG_DSN, lookup_timeout: 0s}\n", "store.lookup_timeout", "0s", 4, "greater than 0"},
	{"identity too long for postgres", "store: {type: postgres, dsn_env: PG_DSN}\ndtls: {max_identity_length: 4096}\n", "dtls.max_identity_length", "4096", 5, "at most 2048 bytes with store type \"postgres\""},
	{"lookup timeout without unit", "store:\n  lookup_timeout: 500\n", "store.lookup_timeout", "500", 5, "duration"},
	{"insecure plaintext keys without kek", "store:\n  insecure_plaintext_keys: true\n", "store.insecure_plaintext_keys", "true", 5, "only meaningful with store.kek_file"},
	{"insecure plaintext keys not a bool", "store: {kek_env: K, insecure_plaintext_keys: yes please}\n", "store.insecure_plaintext_keys", "yes please", 4, "true or false"},
	{"negative mtu", "dtls:\n  mtu: -5\n", "dtls.mtu", "-5", 5, "between 256 and 9000"},
	{"mtu too big", "dtls: {mtu: 65536}\n", "dtls.mtu", "65536", 4, "between 256 and 9000"},
	{"mtu not a number", "dtls:\n  mtu: big\n", "dtls.mtu", "big", 5, "must be an integer"},
	{"mtu a mapping", "dtls:\n  mtu:\n    a: 1\n", "dtls.mtu", "", 6, "integer, not a mapping"},
	{"connection_id_length 40", "dtls:\n  connection_id_length: 40\n", "dtls.connection_id_length", "40", 5, "between 0 (disabled) and 32"},
	{"max_identity_length 0", "dtls: {max_identity_length: 0}\n", "dtls.max_identity_length", "0", 4, "between 1 and 65535"},
	{"one_per_identity not a bool", "sessions:\n  one_per_identity: maybe\n", "sessions.one_per_identity", "maybe", 5, "true or false"},
	{"level loud", "log:\n  level: loud\n", "log.level", "loud", 5, "debug, info, warn, error"},
	{"format text", "log: {format: text}\n", "log.format", "text", 4, `"json" or "console"`},
	{"identities raw", "log: {identities: raw}\n", "log.identities", "raw", 4, `"tag" or "clear"`},
	{"flush interval negative", "log: {flush_interval: -1s}\n", "log.flush_interval", "-1s", 4, "must be 0s (write every line at once) to 1m0s"},
	{"flush interval an hour", "log:\n  flush_interval: 1h\n", "log.flush_interval", "1h0m0s", 5, "to 1m0s"},
	{"listeners a mapping", "listeners:\n  address: \":5684\"\n", "listeners", "", 5, "a list, not a mapping"},
	{"duplicate key", "dtls:\n  mtu: 1200\n  mtu: 1300\n", "dtls.mtu", "", 6, "duplicate key, first at line 5"},
	{"document a list", "- a\n- b\n", "", "", 1, "must be a mapping"},
	{"document a string", "hello\n", "", "hello", 1, "must be a mapping"},
	{"syntax error", "dtls:\n  mtu: 1200\n mtu: [\n", "", "", 0, "invalid yaml"},
	{"second document after empty one", "dtls: {}\n---\n---\nlog: {}\n", "", "", 6, "more than one yaml document"},
	{"two documents", "dtls: {}\n---\nlog: {}\n", "", "", 5, "more than one yaml document"},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range badCases {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.yaml
			if !strings.Contains(data, "backends:") && !strings.HasPrefix(tt.name, "document") {
				data = dm + data
			}
			c, err := Parse([]byte(data))
			if err == nil {
				t.Fatalf("Parse = %+v, want an error", c)
			}
			var es FieldErrors
			if !errors.As(err, &es) {
				t.Fatalf("Parse error %T %v, want FieldErrors", err, err)
			}
			if len(es) != 1 {
				t.Fatalf("got %d errors, want 1:\n%v", len(es), err)
			}
			e := es[0]
			if e.Field != tt.field || e.Value != tt.value {
				t.Errorf("field, value = %q, %q, want %q, %q (%v)", e.Field, e.Value, tt.field, tt.value, e)
			}
			if tt.line != 0 && e.Line != tt.line {
				t.Errorf("line = %d, want %d (%v)", e.Line, tt.line, e)
			}
			if !strings.Contains(e.Msg, tt.msgHas) {
				t.Errorf("msg %q does not contain %q", e.Msg, tt.msgHas)
			}
			if e.Msg != strings.ToLower(e.Msg[:1])+e.Msg[1:] {
				t.Errorf("msg %q is not lowercase", e.Msg)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.field) || tt.value != "" && !strings.Contains(msg, strconv.Quote(tt.value)) {
				t.Errorf("error %q does not name field %q and value %q", msg, tt.field, tt.value)
			}
		})
	}
}

func TestParseSeveralErrors(t *testing.T) {
	_, err := Parse(readTestdata(t, "errors.yaml"))
	var es FieldErrors
	if !errors.As(err, &es) {
		t.Fatalf("Parse = %v, want FieldErrors", err)
	}
	type fl struct {
		field string
		line  int
	}
	want := []fl{
		{"listeners[1].address", 3},
		{"backends.bs.address", 8},
		{"dtls.mtu", 12},
		{"dtls.groups[1]", 13},
		{"dtls.handshake_timeout", 14},
		{"log.level", 16},
		{"log.colour", 17},
		{"default_backend", 0}, // absent from the file: no line, sorted last
	}
	var got []fl
	for _, e := range es {
		got = append(got, fl{e.Field, e.Line})
	}
	if len(got) != len(want) {
		t.Fatalf("got errors %v, want %v\n%v", got, want, err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("error %d = %v, want %v", i, got[i], want[i])
		}
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "8 errors:\n\tline 3: listeners[1].address \"localhost:70000\": ") {
		t.Errorf("Error() = %q", msg)
	}
	// Each error is reachable with errors.As through the joined error.
	var fe *FieldError
	if !errors.As(err, &fe) || fe != es[0] {
		t.Errorf("errors.As(*FieldError) = %v", fe)
	}
}

func TestValidateWithoutLines(t *testing.T) {
	c := Default()
	c.Backends = map[string]Backend{"dm": {Address: "h:1"}}
	c.DTLS.MTU = 0
	c.Log.Level = "loud"
	err := c.Validate()
	var es FieldErrors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("Validate = %v, want 2 errors", err)
	}
	for _, e := range es {
		if e.Line != 0 {
			t.Errorf("%v: line %d, want 0", e, e.Line)
		}
	}
	if es[0].Error() != `dtls.mtu "0": must be between 256 and 9000 bytes` {
		t.Errorf("Error() = %q", es[0].Error())
	}
}
