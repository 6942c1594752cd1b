package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// storeAdmin is what the psk commands need from a key store backend: the
// key file (keyFile, psk_store.go) or PostgreSQL (pgAdmin,
// psk_postgres.go). The commands hold the logic (checks, messages, key
// blocks); a backend only reads and writes. Every write is all or nothing
// and leaves the store as it was on failure.
type storeAdmin interface {
	// where names the store in messages: the key file's path, or the
	// database and schema, never credentials.
	where() string
	// list returns every key, in the store's order.
	list(ctx context.Context) ([]pskstore.Key, error)
	// get returns the key of identity, or pskstore.ErrUnknownIdentity.
	get(ctx context.Context, identity []byte) (pskstore.Key, error)
	// loaded returns the keys held in memory, which new keys are checked
	// against (checkNew) and near misses are suggested from; nil when the
	// store checks every write against its keys itself (PostgreSQL), so a
	// large store is not read for one change.
	loaded(ctx context.Context) ([]pskstore.Key, error)
	// add stores keys, which are new; progress, if not nil, is told how
	// many are written so far.
	add(ctx context.Context, keys []pskstore.Key, progress func(n int)) error
	// rotate replaces the stored key of k.Identity by k (a new key, the
	// same bindings).
	rotate(ctx context.Context, k pskstore.Key) error
	// revoke removes identity, or returns pskstore.ErrUnknownIdentity.
	revoke(ctx context.Context, identity []byte) error
	// replace removes identity and stores keys in its place (RFC 9258
	// import, R6).
	replace(ctx context.Context, identity []byte, keys []pskstore.Key) error
	// rekey re-seals every key under kek and returns how many.
	rekey(ctx context.Context, kek *sealed.KEK) (int, error)
	// plaintext returns the identities whose key is stored in plaintext.
	plaintext(ctx context.Context) (map[string]bool, error)
	close()
}

// keyStore is the key store a psk command works on: its backend and what
// the commands share whatever the backend.
type keyStore struct {
	admin     storeAdmin
	policy    pskstore.Options
	kek       *sealed.KEK // nil: plaintext keys
	kekSource string      // "kek file /etc/…", for messages
	plaintext bool        // plaintext keys accepted although kek is set
	cfg       *config.Config
	// shared: a database every gateway replica reads and watches, rather
	// than a file each gateway reloads.
	shared bool
}

func (ks *keyStore) close() { ks.admin.close() }

func (ks *keyStore) where() string { return ks.admin.where() }

func (ks *keyStore) tag(identity []byte) string { return ks.policy.Tagger.Tag(identity) }

// sealing describes how keys are kept at rest, for notes.
func (ks *keyStore) sealing() string {
	if ks.kek == nil {
		return "plaintext at rest (no key-encryption key)"
	}
	return "sealed at rest under kek " + ks.kek.ID()
}

// liveNote says how running gateways apply a change that closes what
// (R10).
func (ks *keyStore) liveNote(what string) string {
	if ks.shared {
		return "every gateway replica closes " + what + " within seconds (R10)"
	}
	return "the running gateway closes " + what + " when it reloads the file (R10)"
}

// find returns the key of identity, or an error naming it (and a near
// miss under case folding, R7, among the keys the backend has loaded).
func (ks *keyStore) find(ctx context.Context, identity []byte) (pskstore.Key, error) {
	k, err := ks.admin.get(ctx, identity)
	if errors.Is(err, pskstore.ErrUnknownIdentity) {
		return k, ks.notFound(ctx, identity)
	}
	return k, err
}

func (ks *keyStore) notFound(ctx context.Context, identity []byte) error {
	msg := fmt.Sprintf("identity %s not found in %s", showID(identity), ks.where())
	loaded, _ := ks.admin.loaded(ctx)
	if folded, ok := pskstore.FoldIdentity(identity); ok {
		for _, k := range loaded {
			if f, ok := pskstore.FoldIdentity(k.Identity); ok && f == folded {
				msg += fmt.Sprintf(" (did you mean %s? identities are compared byte by byte)", showID(k.Identity))
				break
			}
		}
	}
	return errors.New(msg)
}

// others returns the loaded keys other than identity's, which a key
// replacing identity's is checked against.
func (ks *keyStore) others(ctx context.Context, identity []byte) ([]pskstore.Key, error) {
	loaded, err := ks.admin.loaded(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(slices.Clone(loaded), func(k pskstore.Key) bool { return string(k.Identity) == string(identity) }), nil
}
