// Package pskstore owns external pre-shared keys: the Store interface the
// gateway resolves identities through, the Key record and its text forms,
// the RFC 9257 policy checks (rule IDs R1–R10 of DESIGN.md §3; CheckAdd is
// the one check of every write), the keyed identity tag used in logs (R9)
// and the optional capabilities of a store, found by type assertion:
// Watcher (revocations and rotations, R10) and the key administration of
// admin.go (Lister, Putter, Deleter, Rotator, Replacer).
//
// Backends live in subpackages: memory (tests and demos), file (a YAML key
// file, the default) and postgres (shared by replicas); sealed encrypts
// keys at rest and importer derives RFC 9258 imported keys. Every backend
// passes the conformance suites of pskstoretest (Run; RunWrites for the
// ones that administer keys), and the three constructors follow one style:
// Open(where, options...), the options named alike (WithPolicy, WithLogger,
// WithKEK, WithInsecurePlaintextKeys).
//
// It does not own DTLS, sessions or configuration files of the gateway; it
// imports nothing of this module outside pskstore/.
package pskstore

import (
	"bytes"
	"context"
	"crypto"
	"crypto/subtle"
	"errors"
	"fmt"
)

// ErrUnknownIdentity is returned by Lookup when no key exists for an identity.
// The gateway answers it exactly like a wrong key, so an attacker learns
// nothing about which identities exist.
var ErrUnknownIdentity = errors.New("pskstore: unknown identity")

// ErrUnavailable is returned when a backend cannot answer (database down,
// lookup timeout). The handshake fails like for an unknown identity.
var ErrUnavailable = errors.New("pskstore: store unavailable")

// Store resolves a PSK identity. Safe for concurrent use; Lookup is on the
// handshake path, so it must be fast and honour ctx.
type Store interface {
	// Lookup returns the key for identity, or ErrUnknownIdentity.
	// The returned Key is a copy the caller may keep.
	Lookup(ctx context.Context, identity []byte) (Key, error)
}

// Watcher is an optional Store capability: it reports revocations and
// rotations so live sessions can be closed (R10).
type Watcher interface {
	// Watch returns a channel of changes that is closed when ctx is done.
	Watch(ctx context.Context) (<-chan Change, error)
}

// ChangeKind says what happened to an identity.
type ChangeKind uint8

const (
	// Added: a new identity exists.
	Added ChangeKind = iota + 1
	// Revoked: the identity no longer exists; its sessions must close.
	Revoked
	// Rotated: the identity has a new key; sessions under the old key must close.
	Rotated
)

func (k ChangeKind) String() string {
	switch k {
	case Added:
		return "added"
	case Revoked:
		return "revoked"
	case Rotated:
		return "rotated"
	}
	return fmt.Sprintf("ChangeKind(%d)", uint8(k))
}

// Change is one event reported by a Watcher.
type Change struct {
	Kind     ChangeKind
	Identity []byte
}

// Versions is a set of DTLS protocol versions an identity may use.
type Versions uint8

const (
	// DTLS12 allows DTLS 1.2 (RFC 6347, RFC 7925 profile).
	DTLS12 Versions = 1 << iota
	// DTLS13 allows DTLS 1.3 (RFC 9147).
	DTLS13
)

// Has reports whether every version in v is in s.
func (s Versions) Has(v Versions) bool { return s&v == v && v != 0 }

// Modes is a set of DTLS 1.3 PSK key-exchange modes (RFC 8446 §4.2.9).
type Modes uint8

const (
	// ModeDHE is psk_dhe_ke: the PSK combined with an ephemeral (EC)DHE
	// exchange, which gives forward secrecy (R3, RFC 9257 §6).
	ModeDHE Modes = 1 << iota
	// ModeKE is psk_ke: PSK only, no forward secrecy. Allowed only for keys
	// that say so (R3) and never for low-entropy keys (R2).
	ModeKE
)

// Has reports whether every mode in m is in s.
func (s Modes) Has(m Modes) bool { return s&m == m && m != 0 }

// Key is an external PSK and everything bound to it. The zero values of the
// policy fields are the secure defaults: DTLS 1.3 only is NOT implied; a Key
// with Versions == 0 is normalised by Normalize to DTLS12|DTLS13 and Modes == 0
// to ModeDHE.
type Key struct {
	// Identity is the PSK identity exactly as sent on the wire (R7: compared
	// byte by byte). Never log it; log Tagger.Tag(Identity) instead (R9).
	Identity []byte
	// Secret is the key material, at least 16 bytes (R1).
	Secret Secret
	// Hash is the hash the key is bound to in DTLS 1.3: crypto.SHA256
	// (default when zero) or crypto.SHA384.
	Hash crypto.Hash
	// Endpoint is the LwM2M endpoint name this identity may register as (L1).
	Endpoint string
	// ServerName is the SNI this identity is bound to (R5); empty means unbound.
	ServerName string
	// Backend names the backend LwM2M server the device's traffic goes to;
	// empty means the gateway's default backend.
	Backend string
	// Versions are the DTLS versions the identity may use.
	Versions Versions
	// Modes are the DTLS 1.3 key-exchange modes the identity may use (R3).
	Modes Modes
	// Legacy allows DTLS 1.2 plain-PSK suites (no ECDHE) for this identity (R3).
	Legacy bool
	// AllowLowEntropy accepts a key that fails the entropy screen (R2); such a
	// key is then never used with psk_ke or DTLS 1.2 plain PSK.
	AllowLowEntropy bool
	// Group marks a PSK knowingly shared by a group (R4). A group key is
	// accepted only with an ImportContext (RFC 9257 §6 item 2).
	Group bool
	// ImportContext is the RFC 9258 importer context the key was derived
	// with (R6), naming both client and server; nil for a key that was not
	// imported. A non-empty context is the accommodation that lets a Group
	// key pass the policy (R4).
	ImportContext []byte
}

// Normalize fills the documented defaults of zero fields.
func (k *Key) Normalize() {
	if k.Hash == 0 {
		k.Hash = crypto.SHA256
	}
	if k.Versions == 0 {
		k.Versions = DTLS12 | DTLS13
	}
	if k.Modes == 0 {
		k.Modes = ModeDHE
	}
}

// Clone returns a deep copy of k, so a caller can keep it while the store
// changes underneath.
func (k Key) Clone() Key {
	c := k
	c.Identity = append([]byte(nil), k.Identity...)
	c.Secret = append(Secret(nil), k.Secret...)
	if k.ImportContext != nil {
		c.ImportContext = append([]byte{}, k.ImportContext...)
	}
	return c
}

// Equal reports whether k and o carry the same identity, key material and
// bindings. It compares fields as they are (call Normalize on both first to
// ignore defaulted zero values); key material is compared in constant time,
// and a nil ImportContext equals an empty one. Backends use it to tell a
// rotation from an unchanged entry (R10).
func (k Key) Equal(o Key) bool {
	return bytes.Equal(k.Identity, o.Identity) &&
		len(k.Secret) == len(o.Secret) &&
		subtle.ConstantTimeCompare(k.Secret, o.Secret) == 1 &&
		k.Hash == o.Hash &&
		k.Endpoint == o.Endpoint &&
		k.ServerName == o.ServerName &&
		k.Backend == o.Backend &&
		k.Versions == o.Versions &&
		k.Modes == o.Modes &&
		k.Legacy == o.Legacy &&
		k.AllowLowEntropy == o.AllowLowEntropy &&
		k.Group == o.Group &&
		bytes.Equal(k.ImportContext, o.ImportContext)
}

// Secret is PSK key material. Its String, GoString and Format never show the
// bytes, so a key cannot leak through fmt, %v, %#v or zap (R9).
type Secret []byte

// String redacts the secret.
func (s Secret) String() string { return fmt.Sprintf("[redacted %d-byte key]", len(s)) }

// GoString redacts the secret for %#v.
func (s Secret) GoString() string { return s.String() }

// Format redacts the secret for every fmt verb, including %x and %q.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }
