// Package sealed encrypts PSKs at rest: AES-256-GCM under a key-encryption
// key (KEK) that lives outside the key store, in a file or an environment
// variable, so a copy of the key file alone (a backup, a leaked ConfigMap, a
// disk image) reveals no PSK (R9).
//
// # Format
//
// A sealed key is, in version 1:
//
//	offset  size  field
//	0       1     version, 0x01
//	1       8     KEK id: the first 8 bytes of HMAC-SHA-256(KEK, "kek-id")
//	9       12    nonce, random per seal
//	21      n+16  AES-256-GCM ciphertext of the n-byte PSK, then the tag
//
// The AES key is HMAC-SHA-256(KEK, "pskstore sealed v1 aes-256-gcm"), so the
// KEK itself is never used for two purposes. The associated data is the
// 9-byte header (version and KEK id) followed by the PSK identity: a sealed
// key copied to another identity, or relabelled with another KEK id or
// version, does not open. The KEK id lets Open tell a wrong KEK (ErrWrongKEK,
// naming both ids) from a damaged value (ErrCorrupt), and lets a rekey say
// which KEK a store uses; it reveals nothing about the KEK.
//
// Nonces are random, so one KEK should seal fewer than 2^32 values (NIST SP
// 800-38D §8.3): a store of 100,000 keys saved 40,000 times. Rekey long
// before that.
//
// The package does not own the key file format (pskstore/file stores sealed
// keys as base64) nor where the KEK comes from in the configuration.
package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// Sizes of the format.
const (
	// KEKSize is the size of a key-encryption key in bytes (AES-256).
	KEKSize = 32
	// IDSize is the size of a KEK id in bytes.
	IDSize = 8
	// NonceSize is the size of the AES-GCM nonce in bytes.
	NonceSize = 12
	// Overhead is how much longer a sealed key is than the key.
	Overhead = headerSize + NonceSize + tagSize

	version1   = 0x01
	headerSize = 1 + IDSize
	tagSize    = 16
	// maxKeySize bounds what Seal accepts; PSKs are tens of bytes.
	maxKeySize = 1 << 16
)

// Errors of Open, Seal and the KEK constructors. They are wrapped with
// detail that never includes key material; compare with errors.Is.
var (
	// ErrWrongKEK: the value was sealed under another KEK (its KEK id
	// differs from the configured KEK's).
	ErrWrongKEK = errors.New("sealed: wrong key-encryption key")
	// ErrCorrupt: the value is truncated, of an unknown version, altered,
	// or was sealed for another identity.
	ErrCorrupt = errors.New("sealed: corrupt sealed key")
	// ErrKEK: the key-encryption key material is unusable (wrong length or
	// encoding, low entropy, unset variable).
	ErrKEK = errors.New("sealed: invalid key-encryption key")
)

// Labels of the values derived from a KEK.
const (
	idLabel      = "kek-id"
	aesLabel     = "pskstore sealed v1 aes-256-gcm"
	purposeLabel = "pskstore sealed v1 purposes"
)

// KEK is a key-encryption key ready to seal and open. It keeps only the
// derived AES cipher and the KEK id, not the KEK bytes. A KEK is safe for
// concurrent use; its String and Format show only the id.
type KEK struct {
	id      [IDSize]byte
	aead    cipher.AEAD
	purpose []byte // root of the keys of For's sealers; not the KEK
}

// NewKEK returns the KEK of exactly KEKSize bytes of material. It refuses
// material that fails pskstore.LowEntropy (a passphrase, a pattern): a KEK
// must come from a random generator, e.g. `openssl rand -hex 32`. The
// material is not retained.
func NewKEK(material []byte) (*KEK, error) {
	if len(material) != KEKSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrKEK, len(material), KEKSize)
	}
	if low, why := pskstore.LowEntropy(material); low {
		return nil, fmt.Errorf("%w: low entropy (%s); generate one with `openssl rand -hex 32`", ErrKEK, why)
	}
	k := &KEK{purpose: mac(material, purposeLabel)}
	copy(k.id[:], mac(material, idLabel)[:IDSize])
	block, err := aes.NewCipher(mac(material, aesLabel))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEK, err)
	}
	k.aead, err = cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEK, err)
	}
	return k, nil
}

func mac(key []byte, label string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// ID returns the KEK id in lowercase hex (16 digits). It is not secret.
func (k *KEK) ID() string { return hex.EncodeToString(k.id[:]) }

// String shows the KEK id only.
func (k *KEK) String() string { return "kek " + k.ID() }

// GoString shows the KEK id only, for %#v.
func (k *KEK) GoString() string { return k.String() }

// Format shows the KEK id only, for every fmt verb.
func (k *KEK) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// Seal encrypts key for identity under k with a fresh random nonce and
// returns the sealed value (see the package doc). key must be 1..65536
// bytes; the PSK policy (R1, R2) is the store's business.
func (k *KEK) Seal(identity []byte, key pskstore.Secret) ([]byte, error) {
	if len(key) == 0 || len(key) > maxKeySize {
		return nil, fmt.Errorf("sealed: seal: key of %d bytes, want 1..%d", len(key), maxKeySize)
	}
	out := make([]byte, headerSize+NonceSize, Overhead+len(key))
	out[0] = version1
	copy(out[1:headerSize], k.id[:])
	rand.Read(out[headerSize:]) // never fails since Go 1.24
	nonce := out[headerSize : headerSize+NonceSize]
	return k.aead.Seal(out, nonce, key, additionalData(out[:headerSize], identity)), nil
}

// Open decrypts a value sealed for identity. It returns ErrCorrupt (wrapped)
// for a truncated value, an unknown version, or one that fails
// authentication (altered, or sealed for another identity), and ErrWrongKEK
// (wrapped, naming both KEK ids) for a value sealed under another KEK.
func (k *KEK) Open(identity, sealed []byte) (pskstore.Secret, error) {
	id, err := KEKID(sealed)
	if err != nil {
		return nil, err
	}
	if id != k.ID() {
		return nil, fmt.Errorf("%w: sealed under kek %s, the configured kek is %s", ErrWrongKEK, id, k.ID())
	}
	nonce := sealed[headerSize : headerSize+NonceSize]
	key, err := k.aead.Open(nil, nonce, sealed[headerSize+NonceSize:], additionalData(sealed[:headerSize], identity))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed (altered, or sealed for another identity)", ErrCorrupt)
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("%w: empty key", ErrCorrupt)
	}
	return pskstore.Secret(key), nil
}

// KEKID returns, in hex, the id of the KEK a value was sealed under, without
// decrypting it, or ErrCorrupt (wrapped) if the value is too short or of an
// unknown version.
func KEKID(sealed []byte) (string, error) {
	if len(sealed) < Overhead+1 {
		return "", fmt.Errorf("%w: truncated (%d bytes, at least %d)", ErrCorrupt, len(sealed), Overhead+1)
	}
	if sealed[0] != version1 {
		return "", fmt.Errorf("%w: unknown format version %d", ErrCorrupt, sealed[0])
	}
	return hex.EncodeToString(sealed[1:headerSize]), nil
}

// additionalData is the header followed by the identity; the header has a
// fixed size, so the concatenation is unambiguous.
func additionalData(header, identity []byte) []byte {
	ad := make([]byte, 0, len(header)+len(identity))
	return append(append(ad, header...), identity...)
}
