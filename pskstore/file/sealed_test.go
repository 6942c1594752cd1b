package file

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/pskstoretest"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

func testKEK(t testing.TB) *sealed.KEK {
	t.Helper()
	for {
		m := make([]byte, sealed.KEKSize)
		rand.Read(m)
		if k, err := sealed.NewKEK(m); err == nil {
			return k
		}
	}
}

func TestConformanceSealed(t *testing.T) {
	kek := testKEK(t)
	pskstoretest.Run(t, func(t *testing.T, keys []pskstore.Key) pskstore.Store {
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
}

// sealedFile saves three fresh keys sealed under kek and returns the path
// and the keys.
func sealedFile(t *testing.T, kek *sealed.KEK) (string, []pskstore.Key) {
	t.Helper()
	keys := []pskstore.Key{
		pskstoretest.NewKey(t, []byte("device-0001")),
		pskstoretest.NewKey(t, []byte{0x00, 0xa1, 0xff}),
		pskstoretest.NewKey(t, []byte("device-0003")),
	}
	path := filepath.Join(t.TempDir(), "keys.yaml")
	if err := Save(path, keys, WithKEK(kek)); err != nil {
		t.Fatal(err)
	}
	return path, keys
}

func TestSealedRoundTrip(t *testing.T) {
	kek := testKEK(t)
	path, keys := sealedFile(t, kek)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte("key_sealed:")); n != len(keys) {
		t.Errorf("%d key_sealed fields, want %d", n, len(keys))
	}
	if bytes.Contains(data, []byte("key_hex")) || bytes.Contains(data, []byte("key_base64")) {
		t.Error("a plaintext key field in a sealed file")
	}
	for _, k := range keys {
		for _, form := range []string{hex.EncodeToString(k.Secret), base64.StdEncoding.EncodeToString(k.Secret), string(k.Secret)} {
			if bytes.Contains(data, []byte(form)) {
				t.Fatal("sealed file contains a key")
			}
		}
	}
	s, err := Open(path, WithKEK(kek))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range keys {
		got, err := s.Lookup(context.Background(), want.Identity)
		if err != nil {
			t.Fatal(err)
		}
		want.Normalize()
		if !got.Equal(want) {
			t.Errorf("key %q changed in a sealed round trip", want.Identity)
		}
	}
	// Sealing again draws fresh nonces, yet a reload sees no change (R10:
	// nothing rotated by a mere re-save).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, _ := s.Watch(ctx)
	if err := Save(path, allKeys(t, s), WithKEK(kek)); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(path)
	if bytes.Equal(again, data) {
		t.Error("re-save produced identical ciphertext (nonce reuse?)")
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-ch:
		t.Errorf("re-sealing reported %v", c.Kind)
	default:
	}
}

// rewrite applies f to the decoded key_sealed values of a file, in order.
func rewrite(t *testing.T, path string, f func(i int, blobs [][]byte) []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`key_sealed: "([^"]*)"`)
	var blobs [][]byte
	for _, m := range re.FindAllSubmatch(data, -1) {
		b, err := base64.StdEncoding.DecodeString(string(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, b)
	}
	i := 0
	out := re.ReplaceAllFunc(data, func([]byte) []byte {
		b := f(i, blobs)
		i++
		return []byte(`key_sealed: "` + base64.StdEncoding.EncodeToString(b) + `"`)
	})
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSealedBad: every way a sealed store can be wrong is refused, naming the
// entry's line and field and why, never a key (R9).
func TestSealedBad(t *testing.T) {
	kek, other := testKEK(t), testKEK(t)
	tests := []struct {
		name  string
		mod   func(t *testing.T, path string) // nil: leave the file
		opts  []Option
		is    error
		want  []string
		count int // how many entries are reported; 0 means 1
	}{
		{name: "wrong kek", opts: []Option{WithKEK(other)}, is: sealed.ErrWrongKEK, count: 3,
			want: []string{":4: keys[0].key_sealed: ", "wrong key-encryption key", "sealed under kek " + kek.ID(), "configured kek is " + other.ID()}},
		{name: "no kek", is: ErrNoKEK, count: 3, want: []string{":4: keys[0].key_sealed: ", "no key-encryption key"}},
		{name: "ciphertext moved to another identity", is: sealed.ErrCorrupt, count: 2,
			mod: func(t *testing.T, p string) {
				rewrite(t, p, func(i int, b [][]byte) []byte { return b[[]int{2, 1, 0}[i]] })
			},
			want: []string{":4: keys[0].key_sealed: ", "another identity"}},
		{name: "truncated", is: sealed.ErrCorrupt,
			mod: func(t *testing.T, p string) {
				rewrite(t, p, func(i int, b [][]byte) []byte {
					if i == 1 {
						return b[i][:len(b[i])-3]
					}
					return b[i]
				})
			},
			want: []string{":10: keys[1].key_sealed: ", "authentication failed"}},
		{name: "truncated to a header", is: sealed.ErrCorrupt,
			mod: func(t *testing.T, p string) {
				rewrite(t, p, func(i int, b [][]byte) []byte {
					if i == 2 {
						return b[i][:9]
					}
					return b[i]
				})
			},
			want: []string{":16: keys[2].key_sealed: ", "truncated"}},
		{name: "tampered nonce", is: sealed.ErrCorrupt,
			mod: func(t *testing.T, p string) {
				rewrite(t, p, func(i int, b [][]byte) []byte {
					if i == 0 {
						b[i][9] ^= 0x01
					}
					return b[i]
				})
			},
			want: []string{":4: keys[0].key_sealed: ", "authentication failed"}},
		{name: "bad base64", is: ErrSchema,
			mod: func(t *testing.T, p string) {
				data, _ := os.ReadFile(p)
				data = regexp.MustCompile(`key_sealed: "`).ReplaceAll(data, []byte(`key_sealed: "!`))
				os.WriteFile(p, data, 0o600)
			},
			count: 3, want: []string{":4: keys[0].key_sealed: ", "invalid base64"}},
		{name: "sealed and plaintext key", is: ErrSchema,
			mod: func(t *testing.T, p string) {
				data, _ := os.ReadFile(p)
				data = bytes.Replace(data, []byte("    hash:"), []byte("    key_hex: \"8a1355e09107c42b6df839ae0277b54c\"\n    hash:"), 1)
				os.WriteFile(p, data, 0o600)
			},
			want: []string{":4: keys[0].key_sealed: ", "give either key_hex or key_sealed, not both"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, keys := sealedFile(t, kek)
			if tt.mod != nil {
				tt.mod(t, path)
			}
			opts := tt.opts
			if opts == nil && tt.is != ErrNoKEK {
				opts = []Option{WithKEK(kek)}
			}
			_, err := Open(path, opts...)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			checkBadError(t, err, path, tt.want, "", tt.is)
			want := max(tt.count, 1)
			if n := strings.Count(err.Error(), path+":"); n != want {
				t.Errorf("%d problems reported, want %d: %v", n, want, err)
			}
			checkNoKeys(t, err, keys)
		})
	}
}

func checkNoKeys(t *testing.T, err error, keys []pskstore.Key) {
	t.Helper()
	msg := fmt.Sprintf("%v %+v %#v", err, err, err)
	for _, k := range keys {
		for _, form := range []string{hex.EncodeToString(k.Secret), base64.StdEncoding.EncodeToString(k.Secret), string(k.Secret), fmt.Sprint([]byte(k.Secret))} {
			if strings.Contains(msg, form) {
				t.Fatalf("error shows a key: %s", msg)
			}
		}
		if len(k.Identity) >= 6 && strings.Contains(msg, string(k.Identity)) {
			t.Fatalf("error shows identity %q: %s", k.Identity, msg)
		}
	}
}

// TestPlaintextRefusedWithKEK: with a KEK, plaintext keys load only with the
// explicit insecure option, and Save then seals them all.
func TestPlaintextRefusedWithKEK(t *testing.T) {
	kek := testKEK(t)
	path := filepath.Join(t.TempDir(), "keys.yaml")
	copyFile(t, "testdata/good.yaml", path)
	_, err := Open(path, WithKEK(kek))
	checkBadError(t, err, path, []string{":4: keys[0].key_hex: ", "plaintext key", "gateway psk rekey"}, "", ErrPlaintextKey)
	if n := strings.Count(err.Error(), "plaintext key in a store"); n != 4 {
		t.Errorf("%d plaintext keys reported, want 4: %v", n, err)
	}
	if !strings.Contains(err.Error(), ":15: keys[1].key_base64: ") {
		t.Errorf("key_base64 not reported: %v", err)
	}
	s, err := Open(path, WithKEK(kek), WithInsecurePlaintextKeys(true))
	if err != nil {
		t.Fatalf("Open with insecure plaintext keys: %v", err)
	}
	if n := len(allKeys(t, s)); n != 4 {
		t.Fatalf("%d keys, want 4", n)
	}
	// A mixed file: one sealed key, then the plaintext ones.
	if err := Save(path, []pskstore.Key{pskstoretest.NewKey(t, []byte("sealed-one"))}, WithKEK(kek)); err != nil {
		t.Fatal(err)
	}
	sealedOne, _ := os.ReadFile(path)
	good, _ := os.ReadFile("testdata/good.yaml")
	mixed := string(sealedOne) + string(good[bytes.Index(good, []byte("keys:"))+len("keys:\n"):])
	if err := os.WriteFile(path, []byte(mixed), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, WithKEK(kek)); !errors.Is(err, ErrPlaintextKey) {
		t.Fatalf("mixed file without the insecure option: %v", err)
	}
	s, err = Open(path, WithKEK(kek), WithInsecurePlaintextKeys(true))
	if err != nil {
		t.Fatalf("mixed file: %v\n%s", err, redactedFile([]byte(mixed)))
	}
	if err := Save(path, allKeys(t, s), WithKEK(kek), WithInsecurePlaintextKeys(true)); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if bytes.Contains(data, []byte("key_hex")) || bytes.Contains(data, []byte("key_base64")) {
		t.Error("Save with a KEK wrote a plaintext key")
	}
	if _, err := Open(path, WithKEK(kek)); err != nil {
		t.Errorf("the sealed file needs the insecure option: %v", err)
	}
	// Without a KEK the option changes nothing.
	if _, err := Open("testdata/good.yaml", WithInsecurePlaintextKeys(true)); err != nil {
		t.Error(err)
	}
}

// TestRekeyRoundTrip: keys opened under one KEK and saved under another
// open only under the new one, unchanged.
func TestRekeyRoundTrip(t *testing.T) {
	oldKEK, newKEK := testKEK(t), testKEK(t)
	path, keys := sealedFile(t, oldKEK)
	data, _ := os.ReadFile(path)
	got, err := Parse(data, WithKEK(oldKEK))
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(path, got, WithKEK(newKEK)); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, WithKEK(newKEK))
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		k.Normalize()
		if l, err := s.Lookup(context.Background(), k.Identity); err != nil || !l.Equal(k) {
			t.Errorf("key %d after rekey: %v", i, err)
		}
	}
	if _, err := Open(path, WithKEK(oldKEK)); !errors.Is(err, sealed.ErrWrongKEK) {
		t.Errorf("old KEK after rekey: %v, want ErrWrongKEK", err)
	}
}

// TestReloadWrongKEKKeepsKeys: a file re-sealed under a KEK the running store
// does not have fails to reload and revokes nothing (R10).
func TestReloadWrongKEKKeepsKeys(t *testing.T) {
	kek := testKEK(t)
	path, keys := sealedFile(t, kek)
	s, err := Open(path, WithKEK(kek))
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(path, keys, WithKEK(testKEK(t))); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); !errors.Is(err, sealed.ErrWrongKEK) {
		t.Fatalf("Reload = %v, want ErrWrongKEK", err)
	}
	if n := len(allKeys(t, s)); n != len(keys) {
		t.Errorf("%d keys after a failed reload, want %d", n, len(keys))
	}
}

// FuzzParseSealed: with a KEK, the parser never panics, and what it accepts
// survives a sealed Marshal and Parse unchanged.
func FuzzParseSealed(f *testing.F) {
	kek := testKEK(f)
	keys := []pskstore.Key{pskstoretest.NewKey(f, []byte("device")), pskstoretest.NewKey(f, []byte{0xff})}
	data, err := Marshal(keys, WithKEK(kek))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte("keys:\n  - identity: \"a\"\n    key_sealed: \"AQ==\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := Parse(data, WithKEK(kek), WithInsecurePlaintextKeys(true))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			return
		}
		out, err := Marshal(keys, WithKEK(kek))
		if err != nil {
			t.Fatalf("Marshal of parsed keys: %v", err)
		}
		again, err := Parse(out, WithKEK(kek))
		if err != nil || len(again) != len(keys) {
			t.Fatalf("Parse(Marshal(keys)) = %d keys, %v", len(again), err)
		}
		for i := range keys {
			if !again[i].Equal(keys[i]) {
				t.Fatalf("key %d changed in a round trip", i)
			}
		}
	})
}
