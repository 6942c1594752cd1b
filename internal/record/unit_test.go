package record

import (
	"bytes"
	"crypto/aes"
	"math/rand/v2"
	"testing"

	pionccm "github.com/pion/dtls/v4/pkg/crypto/ccm"
)

// TestCCMAgainstPion: our allocation-free CCM produces and accepts exactly
// what pion's CCM does, for both tag lengths and random lengths, in place;
// a flipped bit fails and leaves no plaintext behind.
func TestCCMAgainstPion(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tagLen := range []int{8, 16} {
		for range 300 {
			key := make([]byte, 16)
			nonce := make([]byte, 12)
			for i := range key {
				key[i] = byte(rng.Uint32())
			}
			for i := range nonce {
				nonce[i] = byte(rng.Uint32())
			}
			msg := make([]byte, rng.IntN(200))
			aad := make([]byte, rng.IntN(40))
			for i := range msg {
				msg[i] = byte(rng.Uint32())
			}
			for i := range aad {
				aad[i] = byte(rng.Uint32())
			}
			b, _ := aes.NewCipher(key)
			ref, err := pionccm.NewCCM(b, tagLen, 12)
			if err != nil {
				t.Fatal(err)
			}
			ours := newCCM(b, tagLen)
			want := ref.Seal(nil, nonce, msg, aad)
			buf := append(make([]byte, 0, len(msg)+16), msg...)
			got := ours.Seal(buf[:0], nonce, buf, aad) // in place
			if !bytes.Equal(got, want) {
				t.Fatalf("tag %d, %d bytes: seal differs", tagLen, len(msg))
			}
			pt, err := ours.Open(got[:0], nonce, got, aad)
			if err != nil || !bytes.Equal(pt, msg) {
				t.Fatalf("open: %v", err)
			}
			bad := bytes.Clone(want)
			bad[rng.IntN(len(bad))] ^= 1 << rng.IntN(8)
			if _, err := ours.Open(bad[:0], nonce, bad, aad); err == nil {
				t.Fatal("forged CCM message opened")
			}
			if n := len(bad) - tagLen; n > 0 && !bytes.Equal(bad[:n], make([]byte, n)) {
				t.Fatal("plaintext left behind after a failed open")
			}
		}
	}
}

// TestWindow: the 64-record replay window (RFC 6347 §4.1.2.6).
func TestWindow(t *testing.T) {
	var w window
	for _, seq := range []uint64{0, 5, 3, 70, 7, 69} {
		if !w.check(seq) {
			t.Fatalf("fresh %d refused", seq)
		}
		w.accept(seq)
	}
	for _, seq := range []uint64{0, 5, 3, 70, 7, 69, 6} {
		if seq != 6 && w.check(seq) {
			t.Fatalf("replayed %d accepted", seq)
		}
	}
	if w.check(6) {
		t.Fatal("6 is older than the window (70-64) and must be refused")
	}
	if !w.check(8) || !w.check(71) || !w.newer(71) || w.newer(69) {
		t.Fatal("window edges wrong")
	}
	r := restoreAbove(100)
	if r.check(100) || r.check(50) || !r.check(101) {
		t.Fatal("restored window must refuse everything up to the restored highest")
	}
}

// TestReconstruct (RFC 9147 §4.2.2): the candidate closest to the expected
// number wins, for 8- and 16-bit fields.
func TestReconstruct(t *testing.T) {
	for _, tc := range []struct {
		next, partial uint64
		bits          uint
		want          uint64
	}{
		{0, 0, 8, 0},
		{0, 0xff, 8, 0xff},
		{0x100, 0xff, 8, 0xff},
		{0x100, 0x00, 8, 0x100},
		{0x1f0, 0x05, 8, 0x205},
		{0x1f0, 0xe0, 8, 0x1e0},
		{0x10000, 0xfffe, 16, 0xfffe},
		{0xfffe, 0x0001, 16, 0x10001},
		{0x12345, 0x2340, 16, 0x12340},
		{5, 0x8005, 16, 0x8005},
	} {
		if got := reconstruct(tc.next, tc.partial, tc.bits); got != tc.want {
			t.Errorf("reconstruct(%#x, %#x, %d) = %#x, want %#x", tc.next, tc.partial, tc.bits, got, tc.want)
		}
	}
}

// TestKeyLogSecret: lines of other sessions are skipped; a matching line
// with a bad secret is an error.
func TestKeyLogSecret(t *testing.T) {
	random := bytes.Repeat([]byte{0xab}, 32)
	other := bytes.Repeat([]byte{0xcd}, 32)
	log := []byte("# comment\nCLIENT_RANDOM " + hexs(other) + " 0102\nCLIENT_RANDOM " + hexs(random) + " 0a0b\n")
	got, err := keyLogSecret(log, "CLIENT_RANDOM", random)
	if err != nil || !bytes.Equal(got, []byte{0x0a, 0x0b}) {
		t.Fatalf("got %x, %v", got, err)
	}
	if got, err := keyLogSecret(log, "EXPORTER_SECRET", random); got != nil || err != nil {
		t.Fatalf("absent label: %x, %v", got, err)
	}
	if _, err := keyLogSecret([]byte("CLIENT_RANDOM "+hexs(random)+" zz\n"), "CLIENT_RANDOM", random); err == nil {
		t.Fatal("bad secret accepted")
	}
	if _, err := keyLogSecret([]byte("CLIENT_RANDOM "+hexs(random)+" 0a0\n"), "CLIENT_RANDOM", random); err == nil {
		t.Fatal("odd-length secret accepted")
	}
	// A label that another label starts with, CRLF line ends, a last line
	// without a newline.
	log = []byte("CLIENT_RANDOM_X " + hexs(random) + " 0102\r\nCLIENT_RANDOM " + hexs(random) + " 0c0d\r\nEXPORTER_SECRET " + hexs(random) + " 0e")
	if got, err := keyLogSecret(log, "CLIENT_RANDOM", random); err != nil || !bytes.Equal(got, []byte{0x0c, 0x0d}) {
		t.Fatalf("CRLF log: got %x, %v", got, err)
	}
	if got, err := keyLogSecret(log, "EXPORTER_SECRET", random); err != nil || !bytes.Equal(got, []byte{0x0e}) {
		t.Fatalf("last line: got %x, %v", got, err)
	}
	if n := testing.AllocsPerRun(10, func() { _, _ = keyLogSecret(log, "EXPORTER_SECRET", random) }); n > 1 {
		t.Errorf("%v allocations per lookup, want only the secret's", n)
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
