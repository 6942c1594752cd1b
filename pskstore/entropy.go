package pskstore

import (
	"compress/flate"
	"crypto/rand"
	"fmt"
	"io"
	"math"
	"sync"
	"unicode"
	"unicode/utf8"
)

// screenWindow bounds the work of the entropy screen on very long keys: the
// pattern tests look at this many leading bytes.
const screenWindow = 1024

// LowEntropy screens key material for signs that it was not drawn from at
// least 128 bits of entropy (R2, RFC 9257 §4.2 and §6 item 1). It reports
// true and a lowercase reason, which never contains key bytes, when the key
//
//   - is printable text (valid UTF-8 of printable characters and spaces): a
//     password or passphrase, or a hex/base64 string used as the key itself;
//   - uses few distinct byte values (fewer than half the number expected from
//     uniformly random bytes of that length);
//   - repeats a pattern (three quarters of the bytes equal the byte p earlier,
//     for some period p up to 64; longer repeats are left to compression);
//   - is a sequence with a constant step (half of the consecutive differences
//     repeat the previous one), e.g. 00 01 02 … or a run of one value;
//   - compresses with DEFLATE to less than three quarters of its length.
//
// The thresholds are set so that random keys of 16 bytes or more trip a test
// with negligible probability; the text test dominates, at about 2^-22 for a
// 16-byte key and 2^-44 for the 32 bytes GenerateSecret draws by default. A
// key that passes is not proven strong: the screen catches the mistakes seen
// in provisioning, not every weak key.
func LowEntropy(secret []byte) (bool, string) {
	n := len(secret)
	if n == 0 {
		return true, "key is empty"
	}
	if isText(secret) {
		return true, "key is printable text, like a password or passphrase"
	}
	w := secret[:min(n, screenWindow)]
	if d, want := distinct(w), expectedDistinct(len(w))/2; float64(d) < want {
		return true, fmt.Sprintf("key uses only %d distinct byte values", d)
	}
	if p := period(w); p > 0 {
		return true, fmt.Sprintf("key repeats a %d-byte pattern", p)
	}
	if sequential(w) {
		return true, "key is a sequence with a constant step"
	}
	if c := deflatedLen(secret); c*4 < n*3 {
		return true, fmt.Sprintf("key compresses to %d%% of its length", c*100/n)
	}
	return false, ""
}

// GenerateSecret returns n bytes from crypto/rand, the way keys the project
// creates are made (R2); n == 0 means 32. It draws again in the rare case the
// bytes trip LowEntropy, so every generated key passes the screen on import.
// n below MinKeyLen is refused with a *PolicyError for R1.
func GenerateSecret(n int) (Secret, error) {
	if n == 0 {
		n = 32
	}
	if n < MinKeyLen {
		return nil, &PolicyError{Rule: "R1", Field: "Secret", Msg: fmt.Sprintf("key length %d below %d bytes", n, MinKeyLen)}
	}
	s := make(Secret, n)
	for {
		rand.Read(s)
		if low, _ := LowEntropy(s); !low {
			return s, nil
		}
	}
}

// isText reports whether b is valid UTF-8 made only of printable characters
// and white space. For random bytes this has probability about (98/256)^n.
func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && r != '\t' && r != '\n' && r != '\r' {
			return false
		}
	}
	return true
}

func distinct(b []byte) int {
	var seen [256]bool
	d := 0
	for _, c := range b {
		if !seen[c] {
			seen[c] = true
			d++
		}
	}
	return d
}

// expectedDistinct is the expected number of distinct values among n
// uniformly random bytes: 256·(1 − (255/256)^n).
func expectedDistinct(n int) float64 {
	return 256 * (1 - math.Pow(255.0/256.0, float64(n)))
}

// maxPeriod is the longest pattern period tests; DEFLATE finds longer ones.
const maxPeriod = 64

// period returns the smallest p ≤ min(len(b)/2, maxPeriod) such that at least
// three quarters of the bytes equal the byte p positions earlier, or 0.
func period(b []byte) int {
	n := len(b)
	for p := 1; p <= min(n/2, maxPeriod); p++ {
		same := 0
		for i := p; i < n; i++ {
			if b[i] == b[i-p] {
				same++
			}
		}
		if same*4 >= (n-p)*3 {
			return p
		}
	}
	return 0
}

// sequential reports whether at least half of the consecutive differences
// (mod 256) equal the previous difference.
func sequential(b []byte) bool {
	n := len(b)
	if n < 3 {
		return true
	}
	same := 0
	for i := 2; i < n; i++ {
		if b[i]-b[i-1] == b[i-1]-b[i-2] {
			same++
		}
	}
	return same*2 >= n-2
}

// deflaters pools DEFLATE writers: building one allocates about 1 MB, and
// resetting one still costs some 30 µs, which is fine for keys checked when
// they are loaded. (BestSpeed is cheaper but does not search short inputs.)
var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(io.Discard, flate.BestCompression) // the level is valid
	return w
}}

// countWriter counts the bytes written to it.
type countWriter int

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

func deflatedLen(b []byte) int {
	var n countWriter
	w := deflaters.Get().(*flate.Writer)
	w.Reset(&n)
	w.Write(b) // a countWriter does not fail
	w.Close()
	// No second Reset before Put: a reset is the expensive part (it clears
	// the match tables) and the next Get resets anyway.
	deflaters.Put(w)
	return int(n)
}
