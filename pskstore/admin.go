package pskstore

import "context"

// Key administration is a set of optional Store capabilities, each a
// one-method interface found by type assertion, like Watcher (Caddy's
// CleanerUpper): a tool asks the store it opened for what it needs, and a
// backend implements what it can keep durably (the file and PostgreSQL
// stores implement them all). Every write is all or nothing, checked with
// CheckAdd against the keys the store holds, and reported to watchers, so
// the sessions of revoked and rotated identities close (R10). Errors never
// carry key material and name identities by tag only (R9).

// Lister lists a store's keys.
type Lister interface {
	// Keys returns a copy of every key, sorted by identity (byte order).
	// It reads the whole store: for audits and exports, not for the
	// handshake path.
	Keys(ctx context.Context) ([]Key, error)
}

// Putter adds keys.
type Putter interface {
	// Put adds keys, all or none, after CheckAdd against the stored keys:
	// MUST findings refuse them, returned as the *PolicyError findings
	// (errors.Join of them when several), whose Index is the key's position
	// in keys. An identity the store holds is one of them (errors.Is
	// ErrDuplicateIdentity): Put never replaces a key. Watchers see Added.
	Put(ctx context.Context, keys ...Key) error
}

// Deleter revokes identities.
type Deleter interface {
	// Delete removes identity, or returns ErrUnknownIdentity. Watchers see
	// Revoked, so its sessions close (R10).
	Delete(ctx context.Context, identity []byte) error
}

// Rotator gives an identity new key material.
type Rotator interface {
	// Rotate replaces the key material of identity with secret and keeps
	// its bindings, after CheckAdd against the other keys (R1, R2, R4). An
	// AllowLowEntropy exemption is dropped when secret passes the entropy
	// screen (R2): it was granted for the old key material. It returns
	// ErrUnknownIdentity if identity is absent. Watchers see Rotated, so
	// sessions under the old key close (R10); rotating to the same key
	// changes nothing.
	Rotate(ctx context.Context, identity []byte, secret Secret) error
}

// Replacer replaces one identity by others in one step.
type Replacer interface {
	// Replace removes identity and adds keys in its place, all or none,
	// keys checked like Put checks them, against the stored keys other
	// than identity: an RFC 9258 import replaces an external PSK by the
	// keys imported from it, and the external PSK must not outlive them
	// (R6). It returns ErrUnknownIdentity if identity is absent. Watchers
	// see identity Revoked and each key Added.
	Replace(ctx context.Context, identity []byte, keys []Key) error
}
