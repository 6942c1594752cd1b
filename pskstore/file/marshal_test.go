package file

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/pskstoretest"
)

func TestMarshalRoundTrip(t *testing.T) {
	s, err := Open("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keys := allKeys(t, s)
	keys = append(keys, pskstoretest.NewKey(t, []byte("caf\u00e9 \"quoted\" \\ tab\there")), pskstoretest.NewKey(t, []byte{0xff, 0x00, '\n'}))
	data, err := Marshal(keys)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse(Marshal(keys)): %v\n%s", err, redactedFile(data))
	}
	if len(got) != len(keys) {
		t.Fatalf("%d keys back, want %d", len(got), len(keys))
	}
	for i := range keys {
		want := keys[i].Clone()
		want.Normalize()
		if !got[i].Equal(want) {
			t.Errorf("key %d: got %+v, want %+v", i, got[i], want)
		}
	}
	if !bytes.HasPrefix(data, []byte("# PSK store")) {
		t.Error("no header comment")
	}
}

// redactedFile shows a key file with key values cut out, for failure output.
func redactedFile(data []byte) string {
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.Index(line, "key_"); i >= 0 {
			line = line[:i] + "key_…: [redacted]"
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

func TestMarshalRefusesPolicyViolations(t *testing.T) {
	k := pskstoretest.NewKey(t, []byte("device"))
	short := k.Clone()
	short.Secret = short.Secret[:15]
	var pe *pskstore.PolicyError
	if _, err := Marshal([]pskstore.Key{short}); !errors.As(err, &pe) || pe.Rule != "R1" {
		t.Errorf("Marshal of a 15-byte key: %v, want R1", err)
	}
	if err := Save(filepath.Join(t.TempDir(), "k.yaml"), []pskstore.Key{k, k}); !errors.As(err, &pe) || pe.Rule != "R7" {
		t.Errorf("Save of a duplicate identity: %v, want R7", err)
	}
}

func TestSaveAtomic0600(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.yaml")
	if err := os.WriteFile(path, []byte("keys: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Save(path, []pskstore.Key{pskstoretest.NewKey(t, []byte("device"))}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%d files in the directory, want 1 (temporary file left behind)", len(entries))
	}
	if _, err := Open(path); err != nil {
		t.Fatal(err)
	}
}
