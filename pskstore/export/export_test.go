package export

import (
	"bytes"
	"crypto"
	"errors"
	"strings"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/pskstoretest"
)

// fullKeys sets every field of a Key, text and binary identities.
func fullKeys(t *testing.T) []pskstore.Key {
	a := pskstoretest.NewKey(t, []byte("device-0001"))
	a.Hash, a.ServerName, a.Backend = crypto.SHA384, "gw.example.com", "dm"
	a.Versions, a.Modes = pskstore.DTLS13, pskstore.ModeDHE|pskstore.ModeKE
	b := pskstoretest.NewKey(t, []byte{0x00, 0xa1, 0xff, '\n'})
	b.Versions, b.Legacy, b.Group, b.ImportContext = pskstore.DTLS12, true, true, []byte("\x00\x01c\x00\x01s")
	c := pskstoretest.NewKey(t, []byte("device, \"quoted\""))
	c.Secret, c.AllowLowEntropy, c.Endpoint = pskstore.Secret("correct horse battery staple"), true, ""
	return []pskstore.Key{a, b, c}
}

// TestRoundTrip: every field of every key survives an export, in both
// formats.
func TestRoundTrip(t *testing.T) {
	keys := fullKeys(t)
	for name, f := range map[string]struct {
		write func(*bytes.Buffer, []pskstore.Key) error
		read  func(*bytes.Buffer) ([]Record, error)
	}{
		"csv":  {func(b *bytes.Buffer, k []pskstore.Key) error { return WriteCSV(b, k) }, func(b *bytes.Buffer) ([]Record, error) { return ReadCSV(b) }},
		"yaml": {func(b *bytes.Buffer, k []pskstore.Key) error { return WriteYAML(b, k) }, func(b *bytes.Buffer) ([]Record, error) { return ReadYAML(b) }},
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := f.write(&buf, keys); err != nil {
				t.Fatal(err)
			}
			recs, err := f.read(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != len(keys) {
				t.Fatalf("%d records, want %d", len(recs), len(keys))
			}
			for i, want := range keys {
				want = want.Clone()
				want.Normalize()
				if got := recs[i].Key; !got.Equal(want) {
					t.Errorf("key %d: %+v, want %+v", i, got, want)
				}
				if recs[i].Line == 0 {
					t.Errorf("record %d has no line", i)
				}
			}
		})
	}
}

func TestCSVText(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteCSV(&buf, fullKeys(t)[:1]); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(buf.String(), "\n")
	if lines[0] != strings.Join(Columns, ",") {
		t.Errorf("header %q", lines[0])
	}
	if !strings.Contains(lines[1], `,sha384,urn:dev:`) || !strings.Contains(lines[1], `,gw.example.com,dm,1.3,"psk_dhe_ke,psk_ke",`) {
		t.Errorf("row %q does not use the text forms of pskstore", lines[1])
	}
}

// TestReadCSVLenient: what people write in spreadsheets: any column order,
// lists with semicolons, comments, key_base64, empty optional cells.
func TestReadCSVLenient(t *testing.T) {
	in := "# provisioning batch 7\nendpoint, key_base64, identity, versions, modes, legacy\n" +
		"urn:dev:a, q0yLkqVIjtUGhuwUJCE+WEwOTMN0yUtFvugzfOQMMTQ=, dev-a, 1.3;1.2, psk_dhe_ke|psk_ke, TRUE\n" +
		"urn:dev:b, q0yLkqVIjtUGhuwUJCE+WEwOTMN0yUtFvugzfOQMMTQ, dev-b,,,\n"
	recs, err := ReadCSV(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	a, b := recs[0].Key, recs[1].Key
	if recs[0].Line != 3 || string(a.Identity) != "dev-a" || a.Versions != pskstore.DTLS12|pskstore.DTLS13 || a.Modes != pskstore.ModeDHE|pskstore.ModeKE || !a.Legacy {
		t.Errorf("row a: line %d, %+v", recs[0].Line, a)
	}
	if b.Hash != crypto.SHA256 || b.Modes != pskstore.ModeDHE || b.Legacy || len(b.Secret) != 32 {
		t.Errorf("row b: %+v", b)
	}
}

// TestReadBad: every bad row is reported with its line, and no message
// repeats a key.
func TestReadBad(t *testing.T) {
	const key = "8a1355e09107c42b6df839ae0277b54c"
	for _, tt := range []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", []string{"empty; the first row names the columns"}},
		{"no header", key + ",dev\n", []string{"line 1, column 1: unknown column (name not repeated"}},
		{"no key column", "identity,endpoint\na,e\n", []string{"needs a key_hex or key_base64 column"}},
		{"column twice", "identity,key_hex,identity\n", []string{"column identity given twice"}},
		{"header only", "identity,key_hex\n", []string{"no rows after the header"}},
		{"syntax", "identity,key_hex\n\"a," + key + "\n", []string{"line 2"}},
		{"bad rows", "identity,key_hex,versions,hash,legacy\n" +
			"a," + key + "zz,,,\nb," + key + ",dtls1.3,,\nc," + key + ",,sha1,\nd," + key + ",,,yes\n," + key + ",,,\n",
			[]string{"5 of 5 records", `line 2: identity "a": key_hex: not valid hex (not shown)`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadCSV(strings.NewReader(tt.in))
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v, want ErrFormat", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			var re *RecordErrors
			if errors.As(err, &re) {
				lines := []int{2, 3, 4, 5, 6}
				for i, e := range re.Errs {
					if e.Line != lines[i] || strings.Contains(e.Error(), key) {
						t.Errorf("row error %q", e)
					}
				}
			}
			if strings.Contains(err.Error(), key) {
				t.Errorf("error %q shows a key", err)
			}
		})
	}
}

func TestReadYAMLBad(t *testing.T) {
	const key = "8a1355e09107c42b6df839ae0277b54c"
	for _, tt := range []struct{ name, in, want string }{
		{"not an export", "keys: []\n", "not a yaml export"},
		{"no devices", "devices: []\n", "no devices"},
		{"unknown field", "devices:\n  - identity: a\n    key_hex: " + key + "\n    " + key + ": x\n", "line 2: identity \"a\": unknown field (name not repeated"},
		{"bad key", "devices:\n  - identity: a\n    key_hex: zz" + key + "\n", "key_hex: not valid hex"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadYAML(strings.NewReader(tt.in))
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), key) {
				t.Errorf("error %q shows a key", err)
			}
		})
	}
}

func TestShow(t *testing.T) {
	for id, want := range map[string]string{"device-1": `"device-1"`, "\x1b[2J": "hex:1b5b324a", "": "hex:"} {
		if got := Show([]byte(id)); got != want {
			t.Errorf("Show(%q) = %s, want %s", id, got, want)
		}
	}
}

// FuzzReadCSV: the reader never panics, and a row it accepts has an
// identity and key material.
func FuzzReadCSV(f *testing.F) {
	f.Add([]byte("identity,key_hex,endpoint\ndev-a,8a1355e09107c42b6df839ae0277b54c,urn:dev:a\n"))
	f.Add([]byte("identity_hex,key_base64,endpoint,versions,modes,legacy,allow_low_entropy,hash\n00ff,AAAA,e,1.3;1.2,psk_ke,true,false,sha384\n"))
	f.Add([]byte("identity,key_hex\n\"a\"\"b\",zz\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := ReadCSV(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, r := range recs {
			if len(r.Key.Identity) == 0 || len(r.Key.Secret) == 0 {
				t.Fatalf("row %d accepted without identity or key", r.Line)
			}
		}
	})
}
