package pskstore

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"sync"
)

// secretLen is the length of the random secrets of Tagger and Fingerprinter.
const secretLen = 32

// Tagger turns PSK identities into short keyed tags for logs and error
// messages (R9, RFC 9257 §7): identities are linkable on the wire, but the
// gateway's own records should not spread them. A tag is stable for one
// secret, so log lines of one device can be correlated, and reveals nothing
// about the identity to someone without the secret.
//
// A Tagger is safe for concurrent use. A nil *Tagger tags with a process-wide
// random secret (tags then differ between runs).
type Tagger struct {
	secret []byte
}

// NewTagger returns a Tagger keyed with secret. A nil or empty secret is
// replaced by 32 random bytes from crypto/rand. The secret is copied.
func NewTagger(secret []byte) *Tagger {
	return &Tagger{secret: keyOrRandom(secret)}
}

// Tag returns "id:" followed by the first 8 bytes of
// HMAC-SHA-256(secret, identity) in lowercase hex, e.g. "id:3f09a1c2d4e5f607".
func (t *Tagger) Tag(identity []byte) string {
	if t == nil {
		t = defaultTagger()
	}
	m := hmac.New(sha256.New, t.secret)
	m.Write(identity)
	var sum [sha256.Size]byte
	return "id:" + hex.EncodeToString(m.Sum(sum[:0])[:8])
}

// defaultTagger is the Tagger behind a nil *Tagger and a zero Options.
var defaultTagger = sync.OnceValue(func() *Tagger { return NewTagger(nil) })

// Fingerprinter computes keyed fingerprints of key material, so the store
// can find the same key under two identities (R4, RFC 9257 §6 item 2)
// without comparing plaintext keys or keeping bare hashes that could be
// matched against a guessed key offline.
//
// Fingerprints are only comparable between the same Fingerprinter (the same
// secret). A Fingerprinter is safe for concurrent use.
type Fingerprinter struct {
	secret []byte
}

// NewFingerprinter returns a Fingerprinter keyed with secret, which should be
// a per-store secret. A nil or empty secret is replaced by 32 random bytes
// from crypto/rand. The secret is copied.
func NewFingerprinter(secret []byte) *Fingerprinter {
	return &Fingerprinter{secret: keyOrRandom(secret)}
}

// fingerprintLabel separates fingerprints from tags, should a caller key a
// Tagger and a Fingerprinter with the same secret.
const fingerprintLabel = "pskstore fingerprint v1\x00"

// Fingerprint returns HMAC-SHA-256(secret, "pskstore fingerprint v1\x00" ||
// key material).
func (f *Fingerprinter) Fingerprint(secret Secret) [32]byte {
	m := hmac.New(sha256.New, f.secret)
	m.Write([]byte(fingerprintLabel))
	m.Write(secret)
	var sum [32]byte
	m.Sum(sum[:0])
	return sum
}

func keyOrRandom(secret []byte) []byte {
	if len(secret) > 0 {
		return append([]byte(nil), secret...)
	}
	b := make([]byte, secretLen)
	rand.Read(b) // never fails since Go 1.24; it crashes the program instead
	return b
}
