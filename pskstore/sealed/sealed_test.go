package sealed

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

func newKEK(t testing.TB) (*KEK, []byte) {
	t.Helper()
	for {
		m := make([]byte, KEKSize)
		rand.Read(m)
		if k, err := NewKEK(m); err == nil {
			return k, m
		}
	}
}

func secret(t testing.TB) pskstore.Secret {
	t.Helper()
	s, err := pskstore.GenerateSecret(0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealOpenRoundTrip(t *testing.T) {
	k, _ := newKEK(t)
	for _, n := range []int{1, 16, 32, 48, 1000} {
		key := make(pskstore.Secret, n)
		rand.Read(key)
		id := []byte(fmt.Sprintf("device-%d", n))
		s, err := k.Seal(id, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != n+Overhead {
			t.Errorf("sealed %d bytes into %d, want %d", n, len(s), n+Overhead)
		}
		if n >= 16 && bytes.Contains(s, key) { // a 1-byte key appears by chance
			t.Error("sealed value contains the key")
		}
		got, err := k.Open(id, s)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, key) {
			t.Errorf("Open returned another key")
		}
		if kid, err := KEKID(s); err != nil || kid != k.ID() {
			t.Errorf("KEKID = %q, %v, want %q", kid, err, k.ID())
		}
	}
	a, _ := k.Seal([]byte("d"), secret(t))
	b, _ := k.Seal([]byte("d"), secret(t))
	if bytes.Equal(a[headerSize:headerSize+NonceSize], b[headerSize:headerSize+NonceSize]) {
		t.Error("two seals share a nonce")
	}
}

func TestSealRefusesEmptyKey(t *testing.T) {
	k, _ := newKEK(t)
	if _, err := k.Seal([]byte("d"), nil); err == nil {
		t.Error("Seal of an empty key succeeded")
	}
}

// TestOpenFailures: every way a sealed value can be wrong is refused with the
// sentinel that says why, and no error shows the key.
func TestOpenFailures(t *testing.T) {
	k, _ := newKEK(t)
	other, _ := newKEK(t)
	key := secret(t)
	id := []byte("device-0001")
	good, err := k.Seal(id, key)
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name     string
		kek      *KEK
		identity []byte
		sealed   []byte
		is       error
		msg      string
	}{
		{"wrong kek", other, id, good, ErrWrongKEK, "sealed under kek " + k.ID() + ", the configured kek is " + other.ID()},
		{"moved to another identity", k, []byte("device-0002"), good, ErrCorrupt, "another identity"},
		{"empty identity", k, nil, good, ErrCorrupt, "authentication failed"},
		{"truncated to nothing", k, id, nil, ErrCorrupt, "truncated"},
		{"truncated header", k, id, good[:5], ErrCorrupt, "truncated"},
		{"truncated tag", k, id, good[:len(good)-1], ErrCorrupt, "authentication failed"},
		{"truncated to overhead", k, id, good[:Overhead], ErrCorrupt, "truncated"},
		{"tampered nonce", k, id, mut(func(b []byte) []byte { b[headerSize] ^= 1; return b }), ErrCorrupt, "authentication failed"},
		{"tampered ciphertext", k, id, mut(func(b []byte) []byte { b[headerSize+NonceSize] ^= 0x80; return b }), ErrCorrupt, "authentication failed"},
		{"tampered tag", k, id, mut(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrCorrupt, "authentication failed"},
		{"unknown version", k, id, mut(func(b []byte) []byte { b[0] = 2; return b }), ErrCorrupt, "version 2"},
		{"kek id relabelled", other, id, mut(func(b []byte) []byte { copy(b[1:headerSize], other.id[:]); return b }), ErrCorrupt, "authentication failed"},
		{"appended byte", k, id, append(bytes.Clone(good), 0), ErrCorrupt, "authentication failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.kek.Open(tt.identity, tt.sealed)
			if !errors.Is(err, tt.is) {
				t.Fatalf("Open = %d bytes, %v; want %v", len(got), err, tt.is)
			}
			if got != nil {
				t.Error("Open returned key material with an error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.msg) {
				t.Errorf("error %q lacks %q", msg, tt.msg)
			}
			for _, s := range []string{string(key), hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key), fmt.Sprint([]byte(key))} {
				if strings.Contains(msg, s) {
					t.Errorf("error shows the key: %s", msg)
				}
			}
		})
	}
}

func TestNewKEK(t *testing.T) {
	_, m := newKEK(t)
	a, err := NewKEK(m)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewKEK(m)
	if a.ID() != b.ID() || len(a.ID()) != 2*IDSize {
		t.Errorf("ids %q and %q of one KEK", a.ID(), b.ID())
	}
	s, _ := a.Seal([]byte("x"), secret(t))
	if _, err := b.Open([]byte("x"), s); err != nil {
		t.Errorf("a KEK rebuilt from the same material cannot open: %v", err)
	}
	for name, bad := range map[string][]byte{
		"short":      m[:31],
		"long":       append(bytes.Clone(m), 1),
		"zeros":      make([]byte, 32),
		"passphrase": []byte("correct horse battery staple 123"),
	} {
		if _, err := NewKEK(bad); !errors.Is(err, ErrKEK) {
			t.Errorf("NewKEK(%s) = %v, want ErrKEK", name, err)
		}
	}
	for _, out := range []string{a.String(), fmt.Sprintf("%v %+v %#v %x %s", a, a, a, a, a)} {
		if strings.Contains(out, hex.EncodeToString(m)) || strings.Contains(out, string(m)) || strings.Contains(out, "0x") {
			t.Errorf("KEK formats as %q", out)
		}
	}
}

func TestReadKEK(t *testing.T) {
	want, m := newKEK(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := map[string][]byte{
		"raw":              m,
		"hex":              []byte(hex.EncodeToString(m)),
		"hex newline":      []byte(hex.EncodeToString(m) + "\n"),
		"HEX":              []byte(strings.ToUpper(hex.EncodeToString(m))),
		"base64":           []byte(base64.StdEncoding.EncodeToString(m) + "\n"),
		"base64 unpadded":  []byte(base64.RawStdEncoding.EncodeToString(m)),
		"base64url spaced": []byte("  " + base64.URLEncoding.EncodeToString(m) + "\r\n"),
	}
	for name, data := range good {
		t.Run("file "+name, func(t *testing.T) {
			k, err := ReadKEKFile(write(strings.ReplaceAll(name, " ", "-"), data))
			if err != nil {
				t.Fatal(err)
			}
			if k.ID() != want.ID() {
				t.Errorf("id %s, want %s", k.ID(), want.ID())
			}
		})
		if name == "raw" {
			continue
		}
		t.Run("env "+name, func(t *testing.T) {
			t.Setenv("TEST_KEK", string(data))
			k, err := KEKFromEnv("TEST_KEK")
			if err != nil {
				t.Fatal(err)
			}
			if k.ID() != want.ID() {
				t.Errorf("id %s, want %s", k.ID(), want.ID())
			}
		})
	}
	hexText := hex.EncodeToString(m)
	bad := map[string][]byte{
		"empty":      nil,
		"31 hex":     []byte(hexText[:62]),
		"bad digit":  []byte(hexText[:63] + "g"),
		"33 raw":     append(bytes.Clone(m), 7),
		"16 base64":  []byte(base64.StdEncoding.EncodeToString(m[:16])),
		"big":        bytes.Repeat([]byte{'a'}, 5000),
		"passphrase": []byte("correct horse battery staple 123"),
	}
	for name, data := range bad {
		t.Run("bad file "+name, func(t *testing.T) {
			p := write("bad-"+strings.ReplaceAll(name, " ", "-"), data)
			_, err := ReadKEKFile(p)
			if !errors.Is(err, ErrKEK) || !strings.Contains(err.Error(), p) {
				t.Fatalf("ReadKEKFile = %v, want ErrKEK naming the file", err)
			}
			if len(data) >= 8 && strings.Contains(err.Error(), string(data[:8])) {
				t.Errorf("error shows the content: %v", err)
			}
		})
	}
	if _, err := ReadKEKFile(filepath.Join(dir, "absent")); !errors.Is(err, ErrKEK) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	t.Setenv("TEST_KEK_EMPTY", "")
	for _, name := range []string{"TEST_KEK_EMPTY", "TEST_KEK_UNSET_9f3a"} {
		if _, err := KEKFromEnv(name); !errors.Is(err, ErrKEK) || !strings.Contains(err.Error(), name) {
			t.Errorf("KEKFromEnv(%s) = %v, want ErrKEK naming it", name, err)
		}
	}
}

// FuzzOpen: Open never panics on any input and never returns a key with an
// error; what it opens was sealed by the test's KEK for that identity.
func FuzzOpen(f *testing.F) {
	k, _ := newKEK(f)
	s, _ := k.Seal([]byte("device"), secret(f))
	f.Add([]byte("device"), s)
	f.Add([]byte(""), s[:Overhead])
	f.Add([]byte("x"), []byte{1})
	f.Fuzz(func(t *testing.T, identity, sealed []byte) {
		key, err := k.Open(identity, sealed)
		if err != nil {
			if key != nil {
				t.Fatal("key with error")
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWrongKEK) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(key) == 0 {
			t.Fatal("empty key opened")
		}
	})
}

// FuzzParseKEK: ParseKEK never panics and never echoes its input.
func FuzzParseKEK(f *testing.F) {
	_, m := newKEK(f)
	f.Add([]byte(hex.EncodeToString(m)))
	f.Add([]byte(base64.StdEncoding.EncodeToString(m)))
	f.Add([]byte("not a kek at all"))
	f.Fuzz(func(t *testing.T, text []byte) {
		k, err := ParseKEK(text)
		if err != nil {
			if k != nil || !errors.Is(err, ErrKEK) {
				t.Fatalf("ParseKEK = %v, %v", k, err)
			}
			if s := strings.TrimSpace(string(text)); len(s) >= 12 && strings.Contains(err.Error(), s) {
				t.Fatalf("error echoes the input: %v", err)
			}
		}
	})
}
