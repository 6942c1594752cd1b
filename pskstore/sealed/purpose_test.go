package sealed

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

func testKEK(t *testing.T) *KEK {
	t.Helper()
	m := make([]byte, KEKSize)
	rand.Read(m)
	k, err := NewKEK(m)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSealerKeySeparation: a value sealed for one purpose opens only for
// that purpose, context and KEK, and never as a sealed PSK (R9: snapshots
// and keys are not interchangeable).
func TestSealerKeySeparation(t *testing.T) {
	k := testKEK(t)
	snap, err := k.For("gateway session snapshot v1")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := k.For("something else")
	msg := []byte("session state")
	sealedMsg := snap.Seal([]byte("dev-1"), msg)
	if got, err := snap.Open([]byte("dev-1"), sealedMsg); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("open: %q, %v", got, err)
	}
	if _, err := snap.Open([]byte("dev-2"), sealedMsg); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("other context: %v, want ErrCorrupt", err)
	}
	if _, err := other.Open([]byte("dev-1"), sealedMsg); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("other purpose: %v, want ErrCorrupt", err)
	}
	if _, err := k.Open([]byte("dev-1"), sealedMsg); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("opened as a PSK: %v, want ErrCorrupt", err)
	}
	psk, _ := k.Seal([]byte("dev-1"), []byte("0123456789abcdef0123456789abcdef"))
	if _, err := snap.Open([]byte("dev-1"), psk); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("sealed PSK opened as a snapshot: %v", err)
	}
	otherKEK, _ := testKEK(t).For("gateway session snapshot v1")
	if _, err := otherKEK.Open([]byte("dev-1"), sealedMsg); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("other KEK: %v, want ErrWrongKEK", err)
	}
	for i := range sealedMsg {
		bad := bytes.Clone(sealedMsg)
		bad[i] ^= 1
		if _, err := snap.Open([]byte("dev-1"), bad); err == nil {
			t.Fatalf("bit %d flipped: opened", i)
		}
	}
}
