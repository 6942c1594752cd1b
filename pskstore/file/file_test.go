package file

import (
	"context"
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/pskstoretest"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

func TestConformance(t *testing.T) {
	pskstoretest.Run(t, func(t *testing.T, keys []pskstore.Key) pskstore.Store {
		path := filepath.Join(t.TempDir(), "keys.yaml")
		if err := Save(path, keys); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestConformanceWrites: the key administration of the file store, plain
// and sealed, passes the shared write suite (R4, R7, R10).
func TestConformanceWrites(t *testing.T) {
	for name, kek := range map[string]*sealed.KEK{"plaintext": nil, "sealed": testKEK(t)} {
		t.Run(name, func(t *testing.T) {
			pskstoretest.RunWrites(t, func(t *testing.T, keys []pskstore.Key) pskstore.Store {
				path := filepath.Join(t.TempDir(), "keys.yaml")
				if err := Save(path, keys, WithKEK(kek)); err != nil {
					t.Fatal(err)
				}
				s, err := Open(path, WithKEK(kek))
				if err != nil {
					t.Fatal(err)
				}
				return s
			})
		})
	}
}

func TestOpenGood(t *testing.T) {
	s, err := Open("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(allKeys(t, s)); n != 4 {
		t.Fatalf("%d keys, want 4", n)
	}
	ctx := context.Background()
	k, err := s.Lookup(ctx, []byte("device-0001"))
	if err != nil {
		t.Fatal(err)
	}
	want := pskstore.Key{Identity: []byte("device-0001"), Hash: crypto.SHA256, Endpoint: "urn:dev:0001", ServerName: "gw.example.com",
		Backend: "dm", Versions: pskstore.DTLS12 | pskstore.DTLS13, Modes: pskstore.ModeDHE}
	want.Secret = k.Secret
	if !k.Equal(want) || len(k.Secret) != 32 {
		t.Errorf("device-0001 = %+v, want %+v", k, want)
	}
	k, err = s.Lookup(ctx, []byte{0x00, 0xa1, 0xff})
	if err != nil {
		t.Fatal(err)
	}
	if k.Hash != crypto.SHA384 || k.Versions != pskstore.DTLS13 || k.Modes != pskstore.ModeDHE|pskstore.ModeKE || len(k.Secret) != 32 {
		t.Errorf("binary identity = %+v", k)
	}
	k, _ = s.Lookup(ctx, []byte("legacy-device"))
	if !k.Legacy || k.Versions != pskstore.DTLS12 || len(k.Secret) != 16 {
		t.Errorf("legacy-device = %+v", k)
	}
	k, _ = s.Lookup(ctx, []byte("group-member"))
	if !k.Group || string(k.ImportContext) != "client=a,server=b" {
		t.Errorf("group-member = %+v", k)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	data := []byte(`keys:
  - identity: "a"
    key_hex: "zz"
  - identity: "b"
    bogus_field_name_far_from_any: 1
    key_hex: "8a1355e09107c42b6df839ae0277b54c"
  - identity: "c"
    key_hex: "8a1355e09107c42b"
  - identity: "d"
    key_hex: "8a1355e09107c42b6df839ae0277b54c"
`)
	_, err := Parse(data)
	msg := err.Error()
	for _, w := range []string{"3: keys[0].key_hex", "5: keys[1]: ", "name not repeated", "8: keys[2].key_hex: policy R1", "10: keys[3].key_hex: policy R4", "same key material as keys[1]"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q lacks %q", msg, w)
		}
	}
	if strings.Contains(msg, "bogus") {
		t.Error("error repeats an unknown field name that is no near miss")
	}
}

func TestReloadDiffR10(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	a := pskstoretest.NewKey(t, []byte("a"))
	b := pskstoretest.NewKey(t, []byte("b"))
	c := pskstoretest.NewKey(t, []byte("c"))
	if err := Save(path, []pskstore.Key{a, b, c}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, _ := s.Watch(ctx)

	// a unchanged, b rotated, c revoked, d added, and an unchanged rewrite.
	b2 := pskstoretest.NewKey(t, []byte("b"))
	d := pskstoretest.NewKey(t, []byte("d"))
	if err := Save(path, []pskstore.Key{d, b2, a}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	// A binding change alone is a rotation too: sessions bound to the old
	// endpoint must close.
	a.Endpoint = "urn:dev:moved"
	if err := Save(path, []pskstore.Key{d, b2, a}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		kind pskstore.ChangeKind
		id   string
	}{{pskstore.Revoked, "c"}, {pskstore.Rotated, "b"}, {pskstore.Added, "d"}, {pskstore.Rotated, "a"}}
	for _, w := range want {
		got := <-ch
		if got.Kind != w.kind || string(got.Identity) != w.id {
			t.Fatalf("change %v %q, want %v %q", got.Kind, got.Identity, w.kind, w.id)
		}
	}
	select {
	case got := <-ch:
		t.Fatalf("unexpected change %v %q", got.Kind, got.Identity)
	default:
	}
	if _, err := s.Lookup(ctx, []byte("c")); !errors.Is(err, pskstore.ErrUnknownIdentity) {
		t.Errorf("revoked identity still found: %v", err)
	}
}

func TestOpenMissingFile(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "absent.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of a missing file: %v, want os.ErrNotExist", err)
	}
}

// allKeys returns every key of s.
func allKeys(t testing.TB, s *Store) []pskstore.Key {
	t.Helper()
	keys, err := s.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return keys
}
