package pskcli

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
		"dev-c,{key},urn:dev:c,,,,1.2,true\n", 0, "writing 3 keys", "added 3 identities")
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
		csvCase("no endpoint column", "identity,key_hex\ndev-a,{key}\n", 1, `line 2: identity "dev-a": endpoint: empty`),
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
			// R1 for every row, and R4: every row has the same key.
			stderr: []string{"40 of 40 rows refused", "line 2:", "line 26:", "… and 54 more"}},
	})
}

// TestPSKAddCSVBulk: three hundred rows are all or nothing, and a refused
// one names its line.
func TestPSKAddCSVBulk(t *testing.T) {
	e := newPSKEnv(t, true)
	var b strings.Builder
	b.WriteString("identity,key_hex,endpoint\n")
	for i := range 300 {
		fmt.Fprintf(&b, "dev-%03d,{key},urn:dev:%03d\n", i, i)
	}
	path := csvFile(t, e, b.String())
	r := runPSK(t, "", "add", "--config", e.config, "--from-csv", path)
	r.expect(t, 0, nil, []string{"writing 300 keys", "added 300 identities"})
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

// TestProgress: on a terminal the bar is redrawn in place; elsewhere a
// plain line at every tenth.
func TestProgress(t *testing.T) {
	var buf bytes.Buffer
	p := &progress{w: &buf, tty: true, label: "writing keys", total: 4}
	p.update(1)
	p.done()
	out := buf.String()
	if !strings.HasPrefix(out, "\rwriting keys [") || !strings.HasSuffix(out, "] 4/4\n") || !strings.Contains(out, strings.Repeat("#", 30)) {
		t.Errorf("bar output %q", out)
	}
	buf.Reset()
	p = newProgress(&buf, "writing keys", 100)
	for i := 1; i <= 100; i++ {
		p.update(i)
	}
	p.done()
	if n := strings.Count(buf.String(), "writing keys:"); n != 10 || !strings.Contains(buf.String(), "writing keys: 50/100 (50%)") {
		t.Errorf("%d progress lines:\n%s", n, buf.String())
	}
}
