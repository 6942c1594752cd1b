package pskcli

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/importer"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// tagOf is the tag the configuration's tag key gives identity.
func tagOf(t *testing.T, e *pskEnv, identity string) string {
	t.Helper()
	secret, err := os.ReadFile(filepath.Join(e.dir, "tag.key"))
	if err != nil {
		t.Fatal(err)
	}
	return pskstore.NewTagger(secret).Tag([]byte(identity))
}

func TestPSKListShow(t *testing.T) {
	runPSKCases(t, []pskCase{
		{name: "list", sealed: true, args: withConfig("list"),
			stdout: []string{"IDENTITY", "TAG", "device-0001", "urn:dev:0001", "gw.example.com", "device-0002", "bs", "1.3,1.2", "psk_dhe_ke"},
			stderr: []string{"2 identities in", "sealed at rest under kek"},
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				if !strings.Contains(r.stdout, tagOf(t, e, "device-0001")) {
					t.Error("list does not show the tag the gateway logs (store.tag_key_file)")
				}
				checkNoLeak(t, pskResult{stderr: r.stdout}, e.secrets...)
			}},
		{name: "list binary and flagged identities",
			setup: func(t *testing.T, e *pskEnv) {
				k := e.initial[1]
				k.Identity, k.Legacy, k.AllowLowEntropy = []byte{0x1b, '[', '2', 'J'}, false, true
				k.Secret = []byte("correct horse battery staple")
				e.save(t, append(e.initial, k))
			},
			args:   withConfig("list"),
			stdout: []string{"hex:1b5b324a", "low-entropy-allowed"}},
		{name: "show", sealed: true, args: withConfig("show", "device-0001"),
			stdout: []string{`identity           "device-0001"`, "identity_hex       6465766963652d30303031", "endpoint           urn:dev:0001",
				"server_name        gw.example.com", "backend            (the default backend)", "modes              psk_dhe_ke",
				"key                32 bytes, sealed at rest under kek"},
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				if !strings.Contains(r.stdout, tagOf(t, e, "device-0001")) {
					t.Error("show lacks the tag")
				}
				checkNoLeak(t, pskResult{stderr: r.stdout}, e.secrets...)
			}},
		{name: "show with flags last", args: withStore("show", "device-0002"), stdout: []string{"backend            bs", "plaintext at rest"}},
		{name: "show binary identity", args: withConfig("show", "--hex", "00a1ff"),
			setup: func(t *testing.T, e *pskEnv) {
				k := e.initial[1]
				k.Identity, k.Secret = []byte{0, 0xa1, 0xff}, randomKey(t)
				e.save(t, append(e.initial, k))
			},
			stdout: []string{"identity           hex:00a1ff"}},
		{name: "show unknown", args: withConfig("show", "Device-0001"), code: 1,
			stderr: []string{`identity "Device-0001" not found`, `did you mean "device-0001"?`}},
		{name: "show without ID", args: withConfig("show"), code: 2, stderr: []string{"missing identity"}},
		{name: "show bad hex", args: withConfig("show", "--hex", "zz"), code: 2, stderr: []string{"not valid hex"}},
		{name: "sealed store without its kek", sealed: true, args: withStore("list"), code: 1,
			stderr: []string{"keys.yaml:4: keys[0].key_sealed: sealed key and no key-encryption key"}},
		{name: "sealed store with another kek", sealed: true,
			setup: func(t *testing.T, e *pskEnv) { writeKEK(t, e.kekFile) },
			args:  withConfig("list"), code: 1, stderr: []string{"keys.yaml:4: keys[0].key_sealed: sealed: wrong key-encryption key", "sealed under kek"}},
	})
}

func TestPSKRevokeRotate(t *testing.T) {
	runPSKCases(t, []pskCase{
		{name: "revoke", sealed: true, args: withConfig("revoke", "device-0001"),
			stderr: []string{`revoked identity "device-0001"`, "closes its sessions"},
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				keys := e.load(t)
				if len(keys) != 1 || string(keys[0].Identity) != "device-0002" || !keys[0].Equal(normalized(e.initial[1])) {
					t.Errorf("after revoke: %d keys", len(keys))
				}
			}},
		{name: "revoke unknown", args: withConfig("revoke", "device-0009"), code: 1, unchanged: true, stderr: []string{`identity "device-0009" not found`}},
		{name: "revoke with --", args: withConfig("revoke", "--", "device-0002"), stderr: []string{`revoked identity "device-0002"`}},
		{name: "rotate", sealed: true, args: withConfig("rotate", "device-0001"),
			stdout: []string{"identity      device-0001", "new key, shown once"},
			stderr: []string{`rotated identity "device-0001"`, "R10"},
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				printed := printedKeys(t, r.stdout)
				k, _ := e.key(t, "device-0001")
				if len(printed) != 1 || !bytes.Equal(printed[0], k.Secret) || bytes.Equal(k.Secret, e.initial[0].Secret) {
					t.Fatal("the stored key is not the new printed key")
				}
				old := normalized(e.initial[0])
				old.Secret = k.Secret
				if !k.Equal(old) {
					t.Errorf("rotate changed bindings: %+v", k)
				}
				if keys := e.load(t); string(keys[1].Identity) != "device-0002" || !keys[1].Equal(normalized(e.initial[1])) {
					t.Error("rotate touched another identity")
				}
			}},
		{name: "rotate clears allow_low_entropy",
			setup: func(t *testing.T, e *pskEnv) {
				e.initial[0].Secret, e.initial[0].AllowLowEntropy = []byte("correct horse battery staple"), true
				e.save(t, e.initial)
			},
			args: withConfig("rotate", "device-0001"),
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				if k, _ := e.key(t, "device-0001"); k.AllowLowEntropy || len(k.Secret) != 32 {
					t.Errorf("rotated %+v", k)
				}
			}},
		{name: "rotate unknown", args: withConfig("rotate", "nope"), code: 1, unchanged: true},
		{name: "rotate an imported key",
			setup: func(t *testing.T, e *pskEnv) {
				imp, err := importer.Import(e.initial[0], importer.Context("urn:dev:0001", "gw.example.com"), importer.DTLSTargets()[:1])
				if err != nil {
					t.Fatal(err)
				}
				e.save(t, append(e.initial[1:], imp...))
				e.arg = hex.EncodeToString(imp[0].Identity)
			},
			args: func(e *pskEnv) []string { return []string{"rotate", "--config", e.config, "--hex", e.arg} },
			code: 1, unchanged: true, stderr: []string{"is an imported key (R6)", "import a new external PSK"}},
	})
}

func normalized(k pskstore.Key) pskstore.Key {
	k = k.Clone()
	k.Normalize()
	return k
}

func TestPSKImport(t *testing.T) {
	runPSKCases(t, []pskCase{
		{name: "both targets", sealed: true,
			args:   withConfig("import", "--identity", "device-0001", "--client", "urn:dev:0001", "--server", "gw.example.com"),
			stdout: []string{"for DTLS 1.3 HKDF_SHA256", "for DTLS 1.3 HKDF_SHA384", "identity_c", "psk_identity[49]", "psk_key[48]"},
			stderr: []string{"2 imported keys stored and the external PSK deleted", "imp binder"},
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				keys := e.load(t)
				if len(keys) != 3 {
					t.Fatalf("%d keys, want 3", len(keys))
				}
				if _, ok := e.key(t, "device-0001"); ok {
					t.Error("the EPSK is still stored (R6)")
				}
				want, err := importer.Import(e.initial[0], importer.Context("urn:dev:0001", "gw.example.com"), importer.DTLSTargets())
				if err != nil {
					t.Fatal(err)
				}
				printed := printedKeys(t, r.stdout)
				for i, w := range want {
					got := keys[i]
					if !got.Equal(w) {
						t.Errorf("imported key %d differs from importer.Import", i)
					}
					if !strings.Contains(r.stdout, "identity_hex  "+hex.EncodeToString(w.Identity)) || !bytes.Equal(printed[i], w.Secret) {
						t.Errorf("imported key %d not printed", i)
					}
				}
				if !keys[2].Equal(normalized(e.initial[1])) {
					t.Error("import touched another identity")
				}
			}},
		{name: "one target", args: withConfig("import", "--identity", "device-0002", "--client", "c", "--server", "s", "--kdf", "sha384"),
			stdout: []string{"HKDF_SHA384"}, stderr: []string{"1 imported keys"},
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				keys := e.load(t)
				if len(keys) != 2 || keys[1].ImportContext == nil || len(keys[1].Secret) != 48 {
					t.Errorf("after import: %+v", keys)
				}
			}},
		// R5: an EPSK bound to no server name gives keys bound to --server;
		// R7: the tool does not warn about its own binary identities.
		{name: "R5 imported keys bound to --server, no R7 warning", args: withConfig("import", "--identity", "device-0002", "--client", "urn:dev:0002", "--server", "gw.example.com"),
			stderr: []string{"bound to server name \"gw.example.com\" (R5)"},
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				for _, k := range e.load(t) {
					if k.ImportContext != nil && k.ServerName != "gw.example.com" {
						t.Errorf("imported key %x bound to %q, want gw.example.com", k.Identity, k.ServerName)
					}
				}
				if strings.Contains(r.stderr, "warning:") || strings.Contains(r.stderr, "policy R7") {
					t.Errorf("import warns about its own identities:\n%s", r.stderr)
				}
			}},
		{name: "server differs from the binding", args: withConfig("import", "--identity", "device-0001", "--client", "c", "--server", "other.example.com"),
			code: 1, unchanged: true, stderr: []string{`differs from the server name "gw.example.com"`}},
		{name: "missing client", args: withConfig("import", "--identity", "device-0001", "--server", "gw.example.com"),
			code: 2, unchanged: true, stderr: []string{"--client NAME and --server NAME are required"}},
		{name: "bad kdf", args: withConfig("import", "--identity", "device-0001", "--client", "c", "--server", "s", "--kdf", "md5"), code: 2},
		{name: "unknown EPSK", args: withConfig("import", "--identity", "nope", "--client", "c", "--server", "s"), code: 1, unchanged: true},
		{name: "R7 imported identity too long", args: withConfig("import", "--identity", "device-0002", "--client", strings.Repeat("c", 60), "--server", strings.Repeat("s", 60)),
			code: 1, unchanged: true, stderr: []string{"policy R7", "allowed 1..128"}},
		{name: "EPSK for DTLS 1.2 only",
			setup: func(t *testing.T, e *pskEnv) {
				e.initial[1].Versions = pskstore.DTLS12
				e.save(t, e.initial)
			},
			args: withConfig("import", "--identity", "device-0002", "--client", "c", "--server", "s"),
			code: 1, unchanged: true, stderr: []string{"does not allow dtls 1.3"}},
	})
}

func TestPSKAudit(t *testing.T) {
	runPSKCases(t, []pskCase{
		{name: "clean sealed store", sealed: true, args: withConfig("audit"),
			stdout: []string{"audit: 2 keys in", "0 MUST findings, 0 SHOULD findings, 0 store warnings"}},
		{name: "plaintext store warns", args: withConfig("audit"),
			stdout: []string{"store WARN", "plaintext at rest", "1 store warnings"}},
		{name: "R7 SHOULD findings exit 0", sealed: true,
			setup: func(t *testing.T, e *pskEnv) {
				k := e.initial[1].Clone()
				k.Identity, k.Secret = []byte("DEVICE-0001"), randomKey(t)
				n := e.initial[1].Clone()
				n.Identity, n.Secret = []byte("cafe\u0301"), randomKey(t)
				e.save(t, append(e.initial, k, n))
			},
			args: withConfig("audit"),
			// Keys in identity order: DEVICE-0001, café, device-0001, device-0002.
			stdout: []string{`R7    SHOULD keys[2] identity "device-0001"`, "nfkc and case folding to keys[0]", "keys[1] identity \"cafe\u0301\"", "2 SHOULD findings", "0 MUST"}},
		{name: "MUST findings exit 1",
			setup: func(t *testing.T, e *pskEnv) {
				writeFile(t, e.keys, []byte("keys:\n  - identity: \"a\"\n    key_hex: \"8a1355e09107c42b\"\n    endpoint: e\n"+
					"  - identity: \"b\"\n    key_hex: \"000102030405060708090a0b0c0d0e0f\"\n    endpoint: e\n  - identity: \"c\"\n    key_hex: \"zz\"\n"))
			},
			args: withConfig("audit"), code: 1, unchanged: true,
			stdout: []string{"R1    MUST   ", "keys.yaml:3: keys[0].key_hex: identity id:", "key is 8 bytes", "R2    MUST   ", "keys.yaml:6: keys[1].key_hex",
				"-     MUST   ", "keys[2].key_hex: invalid key file: invalid hex", "3 MUST findings"},
			stderr: []string{"3 MUST findings: the gateway refuses this key file"}},
		{name: "insecure plaintext keys are counted", sealed: true,
			setup: func(t *testing.T, e *pskEnv) {
				cfg, _ := os.ReadFile(e.config)
				writeFile(t, e.config, append(cfg, "  insecure_plaintext_keys: true\n"...))
				data, _ := os.ReadFile(e.keys)
				plain, _ := file.Marshal([]pskstore.Key{pskstoretestKey(t, "plain-1")})
				writeFile(t, e.keys, append(data, plain[bytes.Index(plain, []byte("  - ")):]...))
			},
			args: withConfig("audit"), stdout: []string{"1 keys in plaintext at rest (insecure_plaintext_keys)"}},
		{name: "group-readable file and kek", sealed: true,
			setup: func(t *testing.T, e *pskEnv) {
				os.Chmod(e.keys, 0o644)
				os.Chmod(e.kekFile, 0o604)
			},
			args: withConfig("audit"), stdout: []string{"mode 0644: readable by other users", "kek file mode 0604", "2 store warnings"}},
		{name: "own group may read the file", sealed: true,
			setup: func(t *testing.T, e *pskEnv) { os.Chmod(e.keys, 0o640) },
			args:  withConfig("audit"), stdout: []string{"0 store warnings"}},
	})
}

func pskstoretestKey(t *testing.T, identity string) pskstore.Key {
	return pskstore.Key{Identity: []byte(identity), Secret: randomKey(t), Endpoint: "urn:dev:" + identity}
}

func TestPSKExport(t *testing.T) {
	runPSKCases(t, []pskCase{
		{name: "csv", sealed: true, args: withConfig("export", "--format", "csv"),
			stdout: []string{"identity,identity_hex,key_hex,hash,endpoint,server_name,backend,versions,modes,legacy,allow_low_entropy,group,import_context_hex\n", "device-0001,,"},
			stderr: []string{"warning: the output holds 2 PLAINTEXT keys"},
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				for _, k := range e.initial {
					if !strings.Contains(r.stdout, hex.EncodeToString(k.Secret)) {
						t.Errorf("export lacks the key of %s", k.Identity)
					}
				}
			}},
		{name: "yaml, one identity", sealed: true, args: withConfig("export", "--format", "yaml", "device-0002"),
			stdout: []string{"devices:\n  - identity: device-0002\n    key_hex: ", "endpoint: urn:dev:0002"},
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				if !strings.Contains(r.stdout, hex.EncodeToString(e.initial[1].Secret)) || strings.Contains(r.stdout, "device-0001") {
					t.Errorf("export:\n%s", r.stdout)
				}
			}},
		{name: "format required", args: withConfig("export"), code: 2, stderr: []string{"the formats are yaml and csv"}},
		{name: "unknown format lists the formats", args: withConfig("export", "--format", "json"), code: 2,
			stderr: []string{`--format "json": the formats are yaml and csv`, "usage: gateway psk export"}},
		{name: "unknown identity", args: withConfig("export", "--format", "csv", "nope"), code: 1, stderr: []string{`"nope" not found`}},
	})
}

// TestPSKExportImportRoundTrip: export --format csv is what add --from-csv
// reads, so a store can be copied into another.
func TestPSKExportImportRoundTrip(t *testing.T) {
	from, to := newPSKEnv(t, true), newPSKEnv(t, false)
	r := runPSK(t, "", "export", "--config", from.config, "--format", "csv")
	r.expect(t, 0, nil, nil)
	writeFile(t, to.keys, []byte("keys: []\n"))
	csvPath := filepath.Join(to.dir, "export.csv")
	writeFile(t, csvPath, []byte(r.stdout))
	r = runPSK(t, "", "add", "--store", to.keys, "--from-csv", csvPath)
	r.expect(t, 0, nil, []string{"added 2 identities"})
	got := to.load(t)
	for i, k := range from.initial {
		if !bytes.Equal(got[i].Identity, k.Identity) || !bytes.Equal(got[i].Secret, k.Secret) || got[i].ServerName != k.ServerName || got[i].Endpoint != k.Endpoint {
			t.Errorf("key %d differs after export and import", i)
		}
	}
}

func TestPSKRekey(t *testing.T) {
	newKEKFile := func(e *pskEnv) string { return filepath.Join(e.dir, "new.kek") }
	rekeyed := func(t *testing.T, e *pskEnv, r pskResult) {
		data, _ := os.ReadFile(newKEKFile(e))
		newKEK, err := sealed.ParseKEK(data)
		if err != nil {
			t.Fatal(err)
		}
		data, _ = os.ReadFile(e.keys)
		keys, err := file.Parse(data, file.WithKEK(newKEK))
		if err != nil {
			t.Fatalf("the store does not open under the new kek: %v", err)
		}
		for i, k := range e.initial {
			if !keys[i].Equal(normalized(k)) {
				t.Errorf("key %d changed by rekey", i)
			}
		}
		if bytes.Contains(data, []byte("key_hex")) {
			t.Error("plaintext left after rekey")
		}
		if e.kek != nil {
			if _, err := file.Parse(data, file.WithKEK(e.kek)); !strings.Contains(err.Error(), "wrong key-encryption key") {
				t.Errorf("old kek after rekey: %v", err)
			}
		}
		if !strings.Contains(r.stderr, "under kek "+newKEK.ID()) {
			t.Errorf("stderr does not name the new kek id:\n%s", r.stderr)
		}
	}
	withNewKEK := func(t *testing.T, e *pskEnv) { writeKEK(t, newKEKFile(e)) }
	runPSKCases(t, []pskCase{
		{name: "sealed to new kek", sealed: true, setup: withNewKEK,
			args: func(e *pskEnv) []string {
				return []string{"rekey", "--config", e.config, "--new-kek-file", newKEKFile(e)}
			},
			stderr: []string{"re-sealed 2 keys", "found 2 sealed under kek ", "restart"}, check: rekeyed},
		{name: "plaintext to sealed", setup: withNewKEK,
			args:   func(e *pskEnv) []string { return []string{"rekey", "--store", e.keys, "--new-kek-file", newKEKFile(e)} },
			stderr: []string{"found 2 plaintext."}, check: rekeyed},
		{name: "a migration half done: the state found is told as it is", sealed: true,
			setup: func(t *testing.T, e *pskEnv) {
				withNewKEK(t, e)
				cfg, _ := os.ReadFile(e.config)
				writeFile(t, e.config, append(cfg, "  insecure_plaintext_keys: true\n"...))
				data, _ := os.ReadFile(e.keys)
				plain, _ := file.Marshal([]pskstore.Key{pskstoretestKey(t, "plain-1")})
				writeFile(t, e.keys, append(data, plain[bytes.Index(plain, []byte("  - ")):]...))
			},
			args: func(e *pskEnv) []string {
				return []string{"rekey", "--config", e.config, "--new-kek-file", newKEKFile(e)}
			},
			check: func(t *testing.T, e *pskEnv, r pskResult) {
				if want := "re-sealed 3 keys"; !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "found 1 plaintext and 2 sealed under kek "+e.kek.ID()) {
					t.Errorf("stderr does not tell the state found:\n%s", r.stderr)
				}
			}},
		{name: "new kek from the environment", sealed: true,
			setup: func(t *testing.T, e *pskEnv) {
				withNewKEK(t, e)
				data, _ := os.ReadFile(newKEKFile(e))
				t.Setenv("TEST_NEW_KEK", strings.TrimSpace(string(data)))
			},
			args:   withConfig("rekey", "--new-kek-env", "TEST_NEW_KEK"),
			stderr: []string{"kek environment variable TEST_NEW_KEK"}, check: rekeyed},
		{name: "bad new kek leaves the file", sealed: true,
			setup: func(t *testing.T, e *pskEnv) { writeFile(t, newKEKFile(e), []byte("not a kek")) },
			args: func(e *pskEnv) []string {
				return []string{"rekey", "--config", e.config, "--new-kek-file", newKEKFile(e)}
			},
			code: 1, unchanged: true, stderr: []string{"new kek: ", "want 64 hex digits"}},
		{name: "wrong current kek leaves the file", sealed: true,
			setup: func(t *testing.T, e *pskEnv) { withNewKEK(t, e); writeKEK(t, e.kekFile) },
			args: func(e *pskEnv) []string {
				return []string{"rekey", "--config", e.config, "--new-kek-file", newKEKFile(e)}
			},
			code: 1, unchanged: true, stderr: []string{"wrong key-encryption key"}},
		{name: "missing new kek", args: withConfig("rekey"), code: 2, unchanged: true, stderr: []string{"--new-kek-file FILE or --new-kek-env NAME"}},
		{name: "unset variable", args: withConfig("rekey", "--new-kek-env", "TEST_UNSET_KEK_71"), code: 1, unchanged: true, stderr: []string{"TEST_UNSET_KEK_71", "not set"}},
	})
}

func TestPSKUsage(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{nil, 2, "", "gateway psk: psk needs a command: add, audit, export, gen, import, list, rekey, revoke, rotate, show\nusage: gateway psk <command>"},
		{[]string{"frobnicate"}, 2, "", `unknown psk command "frobnicate"`},
		{[]string{"help"}, 0, "usage: gateway psk <command> (--config FILE | --store FILE)", ""},
		{[]string{"list", "-h"}, 0, "usage: gateway psk list", ""},
		{[]string{"list", "--bogus"}, 2, "", "gateway psk: list: flag provided but not defined: -bogus\nusage: gateway psk list"},
		{[]string{"gen", "--config", "x.yaml"}, 2, "", "--identity ID"},
		{[]string{"list", "--store", "/nonexistent/keys.yaml"}, 1, "", "no such file"},
	} {
		r := runPSK(t, "", tt.args...)
		if r.code != tt.code || !strings.Contains(r.stdout, tt.stdout) || !strings.Contains(r.stderr, tt.stderr) {
			t.Errorf("gateway psk %s: exit %d, stdout %q, stderr %q; want %d, %q, %q", strings.Join(tt.args, " "), r.code, r.stdout, r.stderr, tt.code, tt.stdout, tt.stderr)
		}
		if tt.code == 2 && (r.stdout != "" || strings.Contains(r.stderr, "commands:") != (len(tt.args) < 2)) {
			t.Errorf("gateway psk %s: a usage error prints stdout %q or the wrong usage:\n%s", strings.Join(tt.args, " "), r.stdout, r.stderr)
		}
	}
}

// TestPSKHelpEveryCommand: --help on every psk command exits 0 and prints
// that command's own usage and flags on stdout, nothing on stderr.
func TestPSKHelpEveryCommand(t *testing.T) {
	for name := range commands {
		for _, help := range []string{"--help", "-h"} {
			r := runPSK(t, "", name, help)
			if r.code != 0 || !strings.HasPrefix(r.stdout, "usage: gateway psk "+name+" ") || !strings.Contains(r.stdout, "-config FILE") || r.stderr != "" {
				t.Errorf("psk %s %s: exit %d\nstdout %q\nstderr %q", name, help, r.code, r.stdout, r.stderr)
			}
		}
	}
}

// TestPSKExportRoundTrip: every field of every key (versions, modes,
// legacy, backend, hash, server name, low-entropy and group flags, the
// importer context) survives export --format csv and add --from-csv into
// another store.
func TestPSKExportRoundTrip(t *testing.T) {
	src := newPSKEnv(t, true)
	full := pskstoretestKey(t, "full")
	full.Hash, full.ServerName, full.Backend = crypto.SHA384, "gw.example.com", "bs"
	full.Versions, full.Modes = pskstore.DTLS13, pskstore.ModeDHE|pskstore.ModeKE
	legacy := pskstoretestKey(t, "legacy")
	legacy.Versions, legacy.Legacy = pskstore.DTLS12, true
	weak := pskstoretestKey(t, "weak")
	weak.Secret, weak.AllowLowEntropy = []byte("correct horse battery staple"), true
	group := pskstoretestKey(t, "\x00group")
	group.Group, group.ImportContext = true, importer.Context("c", "s")
	src.save(t, append(src.initial, full, legacy, weak, group))
	r := runPSK(t, "", "export", "--config", src.config, "--format", "csv")
	r.expect(t, 0, nil, nil)

	dst := newPSKEnv(t, false)
	writeFile(t, dst.keys, []byte("keys: []\n"))
	csvPath := filepath.Join(dst.dir, "export.csv")
	writeFile(t, csvPath, []byte(r.stdout))
	runPSK(t, "", "add", "--config", dst.config, "--from-csv", csvPath).expect(t, 0, nil, []string{"added 6 identities"})
	want := src.load(t)
	got := dst.load(t)
	if len(got) != len(want) {
		t.Fatalf("%d keys after the round trip, want %d", len(got), len(want))
	}
	byID := make(map[string]pskstore.Key)
	for _, k := range got {
		byID[string(k.Identity)] = k
	}
	for _, w := range want {
		if g, ok := byID[string(w.Identity)]; !ok || !g.Equal(w) {
			t.Errorf("key %q changed in the round trip:\n got %+v\nwant %+v", w.Identity, g, w)
		}
	}
}
