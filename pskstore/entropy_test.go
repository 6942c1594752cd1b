package pskstore

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"testing"
)

// TestLowEntropyR2Weak lists keys that must trip the entropy screen (R2).
func TestLowEntropyR2Weak(t *testing.T) {
	tests := []struct {
		name string
		key  []byte
	}{
		{"R2 password", []byte("passwordpassword")},
		{"R2 long passphrase", []byte("correct horse battery staple")},
		{"R2 ascii hex string", []byte("0123456789abcdef")},
		{"R2 hex of random key as text", []byte("8f3a1c9e02b74d6655e1a0c3f9d2b871")},
		{"R2 utf-8 passphrase", []byte("mot de passe très secret")},
		{"R2 16 zero bytes", make([]byte, 16)},
		{"R2 32 0xff bytes", bytes.Repeat([]byte{0xff}, 32)},
		{"R2 repeated 4-byte pattern", bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 4)},
		{"R2 repeated 4-byte pattern 64", bytes.Repeat([]byte{0x91, 0x07, 0xc4, 0x2b}, 16)},
		{"R2 repeated 16-byte random half", append(randomBytes(t, 16, 1), randomBytes(t, 16, 1)...)},
		{"R2 binary counter", seq(0, 1, 16)},
		{"R2 binary counter step 7", seq(0x80, 7, 32)},
		{"R2 descending", seq(0xff, 0xff, 16)},
		{"R2 two values", bytes.Repeat([]byte{0x00, 0x01, 0x01, 0x00}, 8)},
		{"R2 empty", nil},
		{"R2 low nibble bytes 64", lowNibbles(64)},
		{"R2 compressible repeated blocks", blocks(t, "ABACADAEAFAG")},
		{"R2 repeated 128-byte block", blocks(t, "ABCDEFGHABCDEFGH")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			low, why := LowEntropy(tt.key)
			if !low {
				t.Fatal("not flagged as low entropy")
			}
			if why == "" {
				t.Error("no reason given")
			}
			if len(tt.key) >= 4 && bytes.Contains([]byte(why), tt.key) {
				t.Error("reason contains the key")
			}
		})
	}
}

// TestLowEntropyR2RandomKeys draws many keys from crypto/rand: none may trip
// the screen. The one test a random key can fail by chance is the text test
// (probability ≈ (98/256)^n: 2^-22 for 16 bytes); such a key is accepted by
// this test only if it really is printable text, which GenerateSecret would
// draw again.
func TestLowEntropyR2RandomKeys(t *testing.T) {
	for _, n := range []int{16, 17, 24, 32, 48, 64, 256, 2048} {
		t.Run(fmt.Sprintf("%d bytes", n), func(t *testing.T) {
			count := 10000
			if n != 16 {
				count = 1000
			}
			if testing.Short() || raceEnabled {
				count /= 20
			}
			key := make([]byte, n)
			for range count {
				rand.Read(key)
				if low, why := LowEntropy(key); low && !isText(key) {
					t.Fatalf("random %d-byte key flagged: %s", n, why)
				}
			}
		})
	}
}

func TestGenerateSecretR2(t *testing.T) {
	s, err := GenerateSecret(0)
	if err != nil || len(s) != 32 {
		t.Fatalf("GenerateSecret(0) = %d bytes, %v; want 32 bytes", len(s), err)
	}
	if low, why := LowEntropy(s); low {
		t.Errorf("generated key flagged: %s", why)
	}
	t.Run("R1 short", func(t *testing.T) {
		_, err := GenerateSecret(15)
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Rule != "R1" {
			t.Errorf("GenerateSecret(15) error = %v, want R1 policy error", err)
		}
	})
}

func randomBytes(t *testing.T, n int, seed uint64) []byte {
	t.Helper()
	r := mrand.New(mrand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func seq(start, step byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)*step
	}
	return b
}

// blocks concatenates 16-byte random blocks named by the letters of layout:
// "ABAB" repeats block A and block B.
func blocks(t *testing.T, layout string) []byte {
	var out []byte
	for _, c := range layout {
		out = append(out, randomBytes(t, 16, uint64(c))...)
	}
	return out
}

func lowNibbles(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] &= 0x0f
	}
	return b
}
