package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// The psk tool's commands are tested in internal/pskcli; these tests run
// it through main's run on the real wiring (openPSKStore, loadKEK): what
// the tool prints about a store is what serve's openStore opened.

// pskResult is what one in-process `gateway psk …` run produced.
type pskResult struct {
	code           int
	stdout, stderr string
}

// runPSK runs `gateway psk args…` in process, through main's run.
func runPSK(t *testing.T, stdin string, args ...string) pskResult {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"psk"}, args...), strings.NewReader(stdin), &out, &errb)
	return pskResult{code: code, stdout: out.String(), stderr: errb.String()}
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

func pskstoretestKey(t *testing.T, identity string) pskstore.Key {
	t.Helper()
	s, err := pskstore.GenerateSecret(0)
	if err != nil {
		t.Fatal(err)
	}
	return pskstore.Key{Identity: []byte(identity), Secret: s, Endpoint: "urn:dev:" + identity}
}

// TestPSKOnServeWiring: the psk tool opens the store, its KEK and its tag
// key as serve does, reports where the store is even when it does not
// load, and reads rekey's new KEK with serve's reader.
func TestPSKOnServeWiring(t *testing.T) {
	dir := t.TempDir()
	keys, cfgPath, kekFile := filepath.Join(dir, "keys.yaml"), filepath.Join(dir, "gateway.yaml"), filepath.Join(dir, "kek")
	kek := writeKEK(t, kekFile)
	writeFile(t, filepath.Join(dir, "tags"), []byte("0123456789abcdef-tag-secret\n"))
	writeFile(t, cfgPath, []byte("backends: {dm: {address: \"127.0.0.1:5683\"}}\nstore: {path: keys.yaml, kek_file: kek, tag_key_file: tags}\n"))
	if err := file.Save(keys, []pskstore.Key{pskstoretestKey(t, "dev-1")}, file.WithKEK(kek)); err != nil {
		t.Fatal(err)
	}
	tag := pskstore.NewTagger([]byte("0123456789abcdef-tag-secret")).Tag([]byte("dev-2"))

	r := runPSK(t, "", "gen", "--config", cfgPath, "--identity", "dev-2", "--endpoint", "urn:dev:2")
	r.expect(t, 0, []string{"dev-2 (" + tag + "): shown once"}, []string{`added identity "dev-2" (` + tag + ") to " + keys + ", sealed at rest under kek " + kek.ID()})
	if strings.Contains(r.stderr, "note: generated") {
		t.Error("a tag key generated although store.tag_key_file names one")
	}
	runPSK(t, "", "list", "--store", keys, "--kek-file", kekFile, "--tag-key-file", filepath.Join(dir, "tags")).
		expect(t, 0, []string{"dev-1", "dev-2", tag}, []string{"2 identities in " + keys + ", sealed at rest under kek " + kek.ID()})
	runPSK(t, "", "list", "--store", keys).expect(t, 1, nil, []string{"sealed key and no key-encryption key"})
	runPSK(t, "", "rekey", "--config", cfgPath, "--new-kek-file", filepath.Join(dir, "missing")).
		expect(t, 1, nil, []string{"gateway psk: rekey: new kek: store.kek_file: "})
	if got, err := file.Parse(mustRead(t, keys), file.WithKEK(kek)); err != nil || len(got) != 2 {
		t.Fatalf("the store after a refused rekey: %d keys, %v", len(got), err)
	}

	// A key file that does not load: audit says where it is, and why.
	writeFile(t, keys, []byte("keys: [\n"))
	runPSK(t, "", "audit", "--config", cfgPath).expect(t, 1, []string{"-     MUST   ", "audit: 0 keys in " + keys + ", 1 MUST findings"},
		[]string{"1 MUST findings: the gateway refuses this key file"})

	writeFile(t, cfgPath, []byte("backends: {dm: {address: \"127.0.0.1:5683\"}}\nstore: {type: memory}\n"))
	runPSK(t, "", "list", "--config", cfgPath).expect(t, 1, nil, []string{"store.type is memory: gateway psk administers a file or postgres store"})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestPSKUsageThroughMain: main dispatches psk, and its errors get the
// tool's usage and exit statuses.
func TestPSKUsageThroughMain(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"help"}, 0, "psk <command> --config FILE", ""},
		{[]string{"psk"}, 2, "", "gateway psk: psk needs a command: add, audit"},
		{[]string{"psk", "help"}, 0, "usage: gateway psk <command> (--config FILE | --store FILE)", ""},
		{[]string{"psk", "list", "--bogus"}, 2, "", "gateway psk: list: flag provided but not defined: -bogus\nusage: gateway psk list"},
		{[]string{"psk", "list", "--store", "/nonexistent/keys.yaml"}, 1, "", "gateway psk: list: "},
	} {
		var out, errb bytes.Buffer
		code := run(tt.args, nil, &out, &errb)
		if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errb.String(), tt.stderr) {
			t.Errorf("gateway %s: exit %d, stdout %q, stderr %q; want %d, %q, %q", strings.Join(tt.args, " "), code, out.String(), errb.String(), tt.code, tt.stdout, tt.stderr)
		}
	}
}
