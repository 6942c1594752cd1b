package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
)

// Sealer seals values other than PSKs under the same KEK, with a key of
// their own: the gateway's session snapshots must not be interchangeable
// with sealed PSKs, so each purpose gets an AES-256-GCM key derived from
// the KEK for that purpose alone (key separation). The format is the
// package's (version, KEK id, nonce, ciphertext and tag); the associated
// data is the header, the purpose and the caller's context (for example the
// PSK identity a snapshot belongs to), so a value sealed for one purpose or
// context does not open for another. A Sealer is safe for concurrent use.
type Sealer struct {
	kek     *KEK
	purpose string
	aead    cipher.AEAD
}

// For returns the Sealer of a purpose, a fixed label such as "gateway
// session snapshot v1".
func (k *KEK) For(purpose string) (*Sealer, error) {
	block, err := aes.NewCipher(mac(k.purpose, purpose))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEK, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEK, err)
	}
	return &Sealer{kek: k, purpose: purpose, aead: aead}, nil
}

// KEKID returns the id of the KEK the Sealer seals under.
func (s *Sealer) KEKID() string { return s.kek.ID() }

// Seal encrypts plaintext bound to context with a fresh random nonce.
func (s *Sealer) Seal(context, plaintext []byte) []byte {
	out := make([]byte, headerSize+NonceSize, Overhead+len(plaintext))
	out[0] = version1
	copy(out[1:headerSize], s.kek.id[:])
	rand.Read(out[headerSize:]) // never fails since Go 1.24
	nonce := out[headerSize : headerSize+NonceSize]
	return s.aead.Seal(out, nonce, plaintext, s.additionalData(out[:headerSize], context))
}

// Open decrypts a value sealed for context: ErrWrongKEK (wrapped, naming
// both ids) for a value sealed under another KEK, ErrCorrupt (wrapped) for
// a truncated, altered or misplaced one.
func (s *Sealer) Open(context, sealed []byte) ([]byte, error) {
	id, err := KEKID(sealed)
	if err != nil {
		return nil, err
	}
	if id != s.kek.ID() {
		return nil, fmt.Errorf("%w: sealed under kek %s, the configured kek is %s", ErrWrongKEK, id, s.kek.ID())
	}
	nonce := sealed[headerSize : headerSize+NonceSize]
	out, err := s.aead.Open(nil, nonce, sealed[headerSize+NonceSize:], s.additionalData(sealed[:headerSize], context))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed (altered, or sealed for another purpose or context)", ErrCorrupt)
	}
	return out, nil
}

// additionalData is the header, the purpose's length and bytes, then the
// context: unambiguous whatever the lengths.
func (s *Sealer) additionalData(header, context []byte) []byte {
	ad := make([]byte, 0, len(header)+2+len(s.purpose)+len(context))
	ad = append(ad, header...)
	ad = append(ad, byte(len(s.purpose)>>8), byte(len(s.purpose)))
	ad = append(ad, s.purpose...)
	return append(ad, context...)
}
