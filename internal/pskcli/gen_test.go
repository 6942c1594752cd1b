package pskcli

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lwm2m-gateway/gateway/internal/cli"
	"github.com/lwm2m-gateway/gateway/pskstore"
)

func TestPSKGen(t *testing.T) {
	printedIsStored := func(identity string) func(t *testing.T, e *pskEnv, r pskResult) {
		return func(t *testing.T, e *pskEnv, r pskResult) {
			keys := printedKeys(t, r.stdout)
			if len(keys) != 1 || len(keys[0]) != 32 {
				t.Fatalf("printed %d keys, want one of 32 bytes:\n%s", len(keys), r.stdout)
			}
			k, ok := e.key(t, identity)
			if !ok || !bytes.Equal(k.Secret, keys[0]) {
				t.Fatalf("the printed key is not the stored key of %q", identity)
			}
			if low, why := pskstore.LowEntropy(k.Secret); low {
				t.Errorf("generated key is low-entropy: %s", why)
			}
			if !strings.Contains(r.stdout, cArray("psk_key", keys[0])) {
				t.Error("no C array of the key")
			}
			if strings.Count(r.stdout, hex.EncodeToString(keys[0])) != 1 {
				t.Error("the key is printed more than once in hex")
			}
		}
	}
	runPSKCases(t, []pskCase{
		{name: "config, sealed store", sealed: true,
			args:   withConfig("gen", "--identity", "device-0003", "--endpoint", "urn:dev:0003", "--server-name", "gw.example.com", "--backend", "bs"),
			stdout: []string{"identity      device-0003", "identity_hex  6465766963652d30303033", "hash          sha256", "static const uint8_t psk_key[32]"},
			stderr: []string{`added identity "device-0003" (id:`, "sealed at rest under kek"},
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				printedIsStored("device-0003")(t, e, r)
				k, _ := e.key(t, "device-0003")
				if k.Endpoint != "urn:dev:0003" || k.ServerName != "gw.example.com" || k.Backend != "bs" || k.Modes != pskstore.ModeDHE ||
					k.Versions != pskstore.DTLS12|pskstore.DTLS13 || k.Legacy {
					t.Errorf("stored bindings %+v", k)
				}
				data, _ := os.ReadFile(e.keys)
				if bytes.Contains(data, []byte("key_hex")) {
					t.Error("a sealed store got a plaintext key")
				}
				if len(e.load(t)) != 3 {
					t.Error("other identities lost")
				}
			}},
		{name: "store, every binding flag",
			args: withStore("gen", "--identity-hex", "00a1fe", "--endpoint", "urn:dev:bin", "--hash", "sha384", "--versions", "1.3",
				"--modes", "psk_dhe_ke,psk_ke", "--length", "48"),
			stdout: []string{"identity_hex  00a1fe", "static const uint8_t psk_key[48]"},
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				k, ok := e.key(t, "\x00\xa1\xfe")
				if !ok || len(k.Secret) != 48 || k.Versions != pskstore.DTLS13 || k.Modes != pskstore.ModeDHE|pskstore.ModeKE {
					t.Errorf("stored %+v", k)
				}
				if strings.Contains(r.stdout, "identity      ") {
					t.Error("a binary identity printed as text")
				}
			}},
		{name: "legacy flag", args: withStore("gen", "--identity", "old", "--endpoint", "urn:dev:old", "--legacy"),
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				if k, _ := e.key(t, "old"); !k.Legacy {
					t.Error("legacy not stored")
				}
			}},
		{name: "flags after the command's own", args: withConfig("gen", "--endpoint", "urn:dev:9", "--identity", "device-9"),
			check: func(t *testing.T, e *pskEnv, r pskResult) { printedIsStored("device-9")(t, e, r) }},
		{name: "creates a missing store",
			setup: func(t *testing.T, e *pskEnv) { os.Remove(e.keys) },
			args:  withStore("gen", "--identity", "first", "--endpoint", "urn:dev:first"),
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				if keys := e.load(t); len(keys) != 1 {
					t.Errorf("%d keys, want 1", len(keys))
				}
				if fi, _ := os.Stat(e.keys); fi.Mode().Perm() != 0o600 {
					t.Errorf("mode %v", fi.Mode().Perm())
				}
			}},
		{name: "R7 duplicate identity", sealed: true, args: withConfig("gen", "--identity", "device-0001", "--endpoint", "urn:dev:x"),
			code: 1, unchanged: true, stderr: []string{`identity "device-0001": already exists`, "nothing written"}},
		{name: "R7 identity too long", args: withConfig("gen", "--identity", strings.Repeat("d", 129), "--endpoint", "urn:dev:x"),
			code: 1, unchanged: true, stderr: []string{"policy R7", "129 bytes"}},
		{name: "R8 resumption prefix", args: withConfig("gen", "--identity-hex", "ff72657300aa", "--endpoint", "urn:dev:x"),
			code: 1, unchanged: true, stderr: []string{"policy R8", "hex:ff72657300aa"}},
		{name: "R7 look-alike identity is a warning", args: withConfig("gen", "--identity", "DEVICE-0001", "--endpoint", "urn:dev:x"),
			stderr: []string{"warning: identity \"DEVICE-0001\": policy R7 (should)", "nfkc and case folding"}},
		{name: "undeclared backend", args: withConfig("gen", "--identity", "d", "--endpoint", "e", "--backend", "nope"),
			code: 1, unchanged: true, stderr: []string{`backend "nope" is not declared`, "declared: bs, dm"}},
		{name: "missing endpoint", args: withConfig("gen", "--identity", "d"), code: 2, unchanged: true, stderr: []string{"--endpoint is required"}},
		{name: "missing identity", args: withConfig("gen", "--endpoint", "e"), code: 2, unchanged: true, stderr: []string{"--identity ID"}},
		{name: "R1 length 8", args: withConfig("gen", "--identity", "d", "--endpoint", "e", "--length", "8"), code: 2, unchanged: true, stderr: []string{"--length"}},
		{name: "bad mode", args: withConfig("gen", "--identity", "d", "--endpoint", "e", "--modes", "psk_xx"), code: 2, stderr: []string{`unknown mode "psk_xx"`}},
		{name: "config and store", args: func(e *pskEnv) []string {
			return []string{"gen", "--config", e.config, "--store", e.keys, "--identity", "d", "--endpoint", "e"}
		}, code: 2, unchanged: true, stderr: []string{"not both"}},
		{name: "neither config nor store", args: func(*pskEnv) []string { return []string{"gen", "--identity", "d", "--endpoint", "e"} },
			code: 2, stderr: []string{"--config FILE"}},
		{name: "kek flag with config", args: func(e *pskEnv) []string {
			return []string{"list", "--config", e.config, "--kek-file", "x"}
		}, code: 2, stderr: []string{"go with --store"}},
		{name: "stray argument", args: withConfig("gen", "--identity", "d", "--endpoint", "e", "8a1355e09107c42b6df839ae0277b54c"),
			code: 2, unchanged: true, stderr: []string{"1 unexpected arguments"}, check: func(t *testing.T, e *pskEnv, r pskResult) {
				if strings.Contains(r.stderr, "8a1355e0") {
					t.Error("a stray argument is echoed")
				}
			}},
	})
}

func TestPSKAdd(t *testing.T) {
	key := randomKey(t)
	keyHex := hex.EncodeToString(key)
	stored := func(identity string, want []byte) func(t *testing.T, e *pskEnv, r pskResult) {
		return func(t *testing.T, e *pskEnv, r pskResult) {
			k, ok := e.key(t, identity)
			if !ok || !bytes.Equal(k.Secret, want) {
				t.Fatalf("identity %q not stored with its key", identity)
			}
			if r.stdout != "" {
				t.Errorf("add printed on stdout: %q", r.stdout)
			}
		}
	}
	runPSKCases(t, []pskCase{
		{name: "hex on stdin", sealed: true, stdin: keyHex + "\n",
			args:   withConfig("add", "--identity", "device-0003", "--endpoint", "urn:dev:0003", "--key-format", "hex"),
			stderr: []string{`added identity "device-0003"`, "sealed at rest"}, check: stored("device-0003", key)},
		{name: "base64 on stdin", stdin: base64.StdEncoding.EncodeToString(key),
			args:  withStore("add", "--identity", "b64", "--endpoint", "e", "--key-format", "base64"),
			check: stored("b64", key)},
		{name: "raw from a file",
			setup: func(t *testing.T, e *pskEnv) { writeFile(t, filepath.Join(e.dir, "raw.key"), key) },
			args: func(e *pskEnv) []string {
				return []string{"add", "--store", e.keys, "--identity", "raw", "--endpoint", "e", "--key-format", "raw", "--key-file", filepath.Join(e.dir, "raw.key")}
			},
			check: stored("raw", key)},
		{name: "format never guessed", stdin: keyHex, args: withConfig("add", "--identity", "x", "--endpoint", "e"),
			code: 2, unchanged: true, stderr: []string{"--key-format hex|base64|raw is required"}},
		{name: "bad hex", stdin: keyHex[:63] + "z", args: withConfig("add", "--identity", "x", "--endpoint", "e", "--key-format", "hex"),
			code: 1, unchanged: true, stderr: []string{"not valid hex (64 characters, not shown)"}},
		{name: "empty stdin", args: withConfig("add", "--identity", "x", "--endpoint", "e", "--key-format", "raw"),
			code: 1, unchanged: true, stderr: []string{"no key read from stdin"}},
		{name: "R1 15-byte key", stdin: keyHex[:30], args: withConfig("add", "--identity", "x", "--endpoint", "e", "--key-format", "hex"),
			code: 1, unchanged: true, stderr: []string{"policy R1", "15 bytes"}},
		{name: "R2 password refused", stdin: "correct horse battery staple",
			args: withConfig("add", "--identity", "x", "--endpoint", "e", "--key-format", "raw"),
			code: 1, unchanged: true, stderr: []string{"policy R2", "printable text", "--allow-low-entropy"}},
		{name: "R2 sequence refused", stdin: "000102030405060708090a0b0c0d0e0f1011",
			args: withConfig("add", "--identity", "x", "--endpoint", "e", "--key-format", "hex"),
			code: 1, unchanged: true, stderr: []string{"policy R2", "constant step"}},
		{name: "R2 allowed explicitly", stdin: "correct horse battery staple",
			args:  withConfig("add", "--identity", "x", "--endpoint", "e", "--key-format", "raw", "--allow-low-entropy"),
			check: stored("x", []byte("correct horse battery staple"))},
		{name: "R2 allowed but not with psk_ke", stdin: "correct horse battery staple",
			args: withConfig("add", "--identity", "x", "--endpoint", "e", "--key-format", "raw", "--allow-low-entropy", "--modes", "psk_dhe_ke,psk_ke"),
			code: 1, unchanged: true, stderr: []string{"policy R2", "psk_ke is not allowed"}},
		{name: "R4 same key as another identity", sealed: true,
			args: withConfig("add", "--identity", "copy", "--endpoint", "e", "--key-format", "hex"),
			setup: func(t *testing.T, e *pskEnv) {
				// The test's stdin is fixed per case; swap the first key in.
				e.initial[0].Secret = key
				e.save(t, e.initial)
			},
			stdin: keyHex, code: 1, unchanged: true,
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				if want := "policy R4: identity " + tagOf(t, e, "copy") + ": same key material as identity " + tagOf(t, e, "device-0001") + " in the store"; !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}},
		{name: "R7 non-NFC identity warns", stdin: keyHex,
			args:   withConfig("add", "--identity", "cafe\u0301", "--endpoint", "e", "--key-format", "hex"),
			stderr: []string{"warning:", "R7 (should)", "not nfc-normalized"}, check: stored("cafe\u0301", key)},
		{name: "missing key file",
			args: withConfig("add", "--identity", "x", "--endpoint", "e", "--key-format", "hex", "--key-file", "/nonexistent/key"),
			code: 1, unchanged: true, stderr: []string{"--key-file"}},
	})
}

// TestPSKNeverTakesKeyFromArgv: a key given on the command line is refused
// before anything is read or written, with the reason, and never repeated.
func TestPSKNeverTakesKeyFromArgv(t *testing.T) {
	const k = "8a1355e09107c42b6df839ae0277b54c1e60d39f24b84ac705e97b31fd86520c"
	for _, args := range [][]string{
		{"add", "--identity", "x", "--endpoint", "e", "--key", k},
		{"add", "--identity", "x", "--endpoint", "e", "--key=" + k},
		{"add", "-key", k, "--identity", "x"},
		{"add", "--psk", k},
		{"add", "--secret=" + k},
		{"add", "--key-hex", k},
		{"add", "--key-base64", k},
		{"gen", "--identity", "x", "--endpoint", "e", "--key", k},
		{"rotate", "device-0001", "--key", k},
		{"add", "--identity", "x", "--endpoint", "e", "--key-format", "hex", k},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			e := newPSKEnv(t, false)
			before, _ := os.ReadFile(e.keys)
			r := runPSK(t, "", append(args, "--config", e.config)...)
			r.expect(t, 2, nil, nil)
			if strings.Contains(r.stderr, k[:16]) || strings.Contains(r.stdout, k[:16]) {
				t.Errorf("the key is echoed:\n%s", r.stderr)
			}
			if !strings.Contains(r.stderr, "never taken from the command line") && !strings.Contains(r.stderr, "unexpected arguments") {
				t.Errorf("no explanation:\n%s", r.stderr)
			}
			if after, _ := os.ReadFile(e.keys); !bytes.Equal(before, after) {
				t.Error("the key file changed")
			}
		})
	}
}

// TestPSKAddRefusesTerminal: a key is never read from a terminal, where it
// would be echoed; /dev/null stands in for one (a character device).
func TestPSKAddRefusesTerminal(t *testing.T) {
	e := newPSKEnv(t, false)
	tty, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	r := runPSKOn(t, tty, "add", "--config", e.config, "--identity", "x", "--endpoint", "e", "--key-format", "hex")
	if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "echoed") {
		t.Errorf("add with a terminal on stdin: exit %d, %s", r.code, r.stderr)
	}
}
