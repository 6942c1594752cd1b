package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// csvFile writes a CSV file into the test's store directory; "{key}" in
// content is replaced by a fresh random key in hex at each occurrence.
func csvFile(t *testing.T, e *pskEnv, content string) string {
	t.Helper()
	for strings.Contains(content, "{key}") {
		k := randomKey(t)
		e.secrets = append(e.secrets, k)
		content = strings.Replace(content, "{key}", hex.EncodeToString(k), 1)
	}
	path := filepath.Join(e.dir, "devices.csv")
	writeFile(t, path, []byte(content))
	return path
}

func TestPSKAddCSV(t *testing.T) {
	csvCase := func(name, content string, code int, stderr ...string) pskCase {
		return pskCase{name: name, sealed: true, code: code, stderr: stderr, unchanged: code != 0,
			setup: func(t *testing.T, e *pskEnv) { csvFile(t, e, content) },
			args: func(e *pskEnv) []string {
				return []string{"add", "--config", e.config, "--from-csv", filepath.Join(e.dir, "devices.csv")}
			}}
	}
	good := csvCase("three rows", "identity,key_hex,endpoint,server_name,backend,modes,versions,legacy\n"+
		"dev-a,{key},urn:dev:a,gw.example.com,bs,psk_dhe_ke;psk_ke,1.3,\n"+
		"# a comment\n"+
		"dev-b,{key},urn:dev:b,,,,,\n"+
		"dev-c,{key},urn:dev:c,,,,1.2,true\n", 0, "checking rows: 3/3 (100%)", "writing 3 keys", "added 3 identities")
	good.check = func(t *testing.T, e *pskEnv, r pskResult) {
		keys := e.load(t)
		if len(keys) != 5 {
			t.Fatalf("%d keys, want 5", len(keys))
		}
		a, c := keys[2], keys[4]
		if string(a.Identity) != "dev-a" || a.ServerName != "gw.example.com" || a.Backend != "bs" || a.Modes != pskstore.ModeDHE|pskstore.ModeKE || a.Versions != pskstore.DTLS13 {
			t.Errorf("dev-a = %+v", a)
		}
		if !c.Legacy || c.Versions != pskstore.DTLS12 {
			t.Errorf("dev-c = %+v", c)
		}
		if r.stdout != "" {
			t.Errorf("stdout %q", r.stdout)
		}
	}
	binary := csvCase("binary identity and base64 key", "identity_hex,key_base64,endpoint\n00ff01,q0yLkqVIjtUGhuwUJCE+WEwOTMN0yUtFvugzfOQMMTQ=,urn:dev:bin\n", 0)
	binary.check = func(t *testing.T, e *pskEnv, r pskResult) {
		if _, ok := e.key(t, "\x00\xff\x01"); !ok {
			t.Error("binary identity not stored")
		}
	}
	runPSKCases(t, []pskCase{
		good, binary,
		csvCase("R1 short key on line 3", "identity,key_hex,endpoint\ndev-a,{key},urn:dev:a\ndev-b,8a1355e09107c42b,urn:dev:b\n", 1,
			`line 3: identity "dev-b": policy R1`, "1 of 2 rows refused, nothing written"),
		csvCase("R2 low entropy", "identity,key_hex,endpoint\ndev-a,00000000000000000000000000000000,urn:dev:a\n", 1, "line 2", "policy R2"),
		csvCase("R2 allowed by the column", "identity,key_hex,endpoint,allow_low_entropy\ndev-a,000102030405060708090a0b0c0d0e0f,urn:dev:a,true\n", 0),
		csvCase("R7 identity twice in the file", "identity,key_hex,endpoint\ndev-a,{key},e\ndev-b,{key},e\ndev-a,{key},e\n", 1,
			`line 4: identity "dev-a": given twice, also on line 2`),
		csvCase("R7 identity already in the store", "identity,key_hex,endpoint\ndevice-0002,{key},e\n", 1, `line 2: identity "device-0002": already exists`),
		csvCase("R4 same key on two rows", "identity,key_hex,endpoint\ndev-a,8a1355e09107c42b6df839ae0277b54c,e\ndev-b,8a1355e09107c42b6df839ae0277b54c,e\n", 1,
			`line 3: identity "dev-b": policy R4: same key material as line 2 (identity "dev-a")`),
		csvCase("bad hex names the row, not the key", "identity,key_hex,endpoint\ndev-a,{key},e\ndev-b,8a1355e09107c42b6df839ae0277b54z,e\n", 1,
			`line 3: identity "dev-b": key_hex: not valid hex (not shown)`),
		csvCase("missing endpoint cell", "identity,key_hex,endpoint\ndev-a,{key},\n", 1, `line 2: identity "dev-a": endpoint: empty`),
		csvCase("undeclared backend", "identity,key_hex,endpoint,backend\ndev-a,{key},e,nope\n", 1, `line 2: identity "dev-a": backend "nope" is not declared`),
		csvCase("wrong field count", "identity,key_hex,endpoint\ndev-a,{key},e\ndev-b,{key}\n", 1, "line 3", "wrong number of fields", "nothing written"),
		csvCase("no header", "dev-a,8a1355e09107c42b6df839ae0277b54c,e\n", 1, "line 1, column 1: unknown column (name not repeated"),
		csvCase("no endpoint column", "identity,key_hex\ndev-a,{key}\n", 1, "needs an endpoint column"),
		csvCase("no key column", "identity,endpoint\ndev-a,e\n", 1, "needs a key_hex or key_base64 column"),
		csvCase("column twice", "identity,key_hex,endpoint,identity\n", 1, "column identity given twice"),
		csvCase("header only", "identity,key_hex,endpoint\n", 1, "no rows after the header"),
		{name: "other flags refused", args: func(e *pskEnv) []string {
			return []string{"add", "--config", e.config, "--from-csv", "x.csv", "--identity", "d"}
		}, code: 2, unchanged: true, stderr: []string{"drop --identity"}},
		{name: "every problem at once", sealed: true, code: 1, unchanged: true,
			setup: func(t *testing.T, e *pskEnv) {
				var b strings.Builder
				b.WriteString("identity,key_hex,endpoint\n")
				for i := range 40 {
					fmt.Fprintf(&b, "dev-%d,8a13,e\n", i)
				}
				csvFile(t, e, b.String())
			},
			args: func(e *pskEnv) []string {
				return []string{"add", "--config", e.config, "--from-csv", filepath.Join(e.dir, "devices.csv")}
			},
			stderr: []string{"40 of 40 rows refused", "line 2:", "line 26:", "… and 15 more"}},
	})
}

// TestPSKAddCSVProgress: without a terminal, progress is a plain line at
// every tenth, and a thousand rows are all or nothing.
func TestPSKAddCSVProgress(t *testing.T) {
	e := newPSKEnv(t, true)
	var b strings.Builder
	b.WriteString("identity,key_hex,endpoint\n")
	for i := range 300 {
		fmt.Fprintf(&b, "dev-%03d,{key},urn:dev:%03d\n", i, i)
	}
	path := csvFile(t, e, b.String())
	r := runPSK(t, "", "add", "--config", e.config, "--from-csv", path)
	r.expect(t, 0, nil, []string{"checking rows: 30/300 (10%)", "checking rows: 150/300 (50%)", "checking rows: 300/300 (100%)"})
	if n := strings.Count(r.stderr, "checking rows:"); n != 10 {
		t.Errorf("%d progress lines, want 10:\n%s", n, r.stderr)
	}
	if n := len(e.load(t)); n != 302 {
		t.Errorf("%d keys, want 302", n)
	}
	checkNoLeak(t, r, e.secrets...)

	// One bad row among 300 more: nothing is written.
	before := e.load(t)
	b.Reset()
	b.WriteString("identity,key_hex,endpoint\n")
	for i := range 300 {
		k := "{key}"
		if i == 250 {
			k = "00"
		}
		fmt.Fprintf(&b, "new-%03d,%s,urn:dev:new-%03d\n", i, k, i)
	}
	path = csvFile(t, e, b.String())
	r = runPSK(t, "", "add", "--config", e.config, "--from-csv", path)
	r.expect(t, 1, nil, []string{`line 252: identity "new-250": policy R1`, "1 of 300 rows refused, nothing written"})
	if after := e.load(t); len(after) != len(before) {
		t.Errorf("%d keys after a refused file, want %d", len(after), len(before))
	}
}

// TestProgressTerminal: on a terminal the bar is redrawn in place.
func TestProgressTerminal(t *testing.T) {
	var buf bytes.Buffer
	p := &progress{w: &buf, tty: true, label: "checking rows", total: 4}
	for i := 1; i <= 4; i++ {
		p.update(i)
	}
	p.done()
	out := buf.String()
	if !strings.HasPrefix(out, "\rchecking rows [") || !strings.HasSuffix(out, "] 4/4\n") || !strings.Contains(out, strings.Repeat("#", 30)) {
		t.Errorf("bar output %q", out)
	}
}

// FuzzCSV: the bulk provisioning parser never panics on any file, and a
// row it accepts is a key with an identity, key material and an endpoint.
func FuzzCSV(f *testing.F) {
	f.Add([]byte("identity,key_hex,endpoint\ndev-a,8a1355e09107c42b6df839ae0277b54c,urn:dev:a\n"))
	f.Add([]byte("identity_hex,key_base64,endpoint,versions,modes,legacy,allow_low_entropy,hash\n00ff,AAAA,e,1.3;1.2,psk_ke,true,false,sha384\n"))
	f.Add([]byte("identity,key_hex\n\"a\"\"b\",zz\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "f.csv")
		writeFile(t, path, data)
		cols, rows, err := readCSV(path)
		if err != nil {
			return
		}
		for _, r := range rows {
			k, err := r.key(cols)
			if err == nil && (len(k.Identity) == 0 || len(k.Secret) == 0 || k.Endpoint == "") {
				t.Fatalf("row %d accepted without identity, key or endpoint", r.line)
			}
		}
	})
}
