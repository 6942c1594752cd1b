package pskcli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/export"
)

// Close releases what the store holds (a PostgreSQL store's connections).
func (ks *Store) Close() {
	if c, ok := ks.Store.(io.Closer); ok {
		_ = c.Close()
	}
}

func (ks *Store) tag(identity []byte) string { return ks.Policy.Tagger.Tag(identity) }

// keys lists every key of the store.
func (ks *Store) keys() ([]pskstore.Key, error) {
	l, err := capability[pskstore.Lister](ks, "list keys")
	if err != nil {
		return nil, err
	}
	return l.Keys(ctx())
}

// plaintext returns the identities whose key the store holds in plaintext.
func (ks *Store) plaintext() (map[string]bool, error) {
	out := make(map[string]bool)
	p, ok := ks.Store.(interface {
		PlaintextIdentities(context.Context) ([][]byte, error)
	})
	if !ok {
		return out, nil
	}
	ids, err := p.PlaintextIdentities(ctx())
	for _, id := range ids {
		out[string(id)] = true
	}
	return out, err
}

// capability returns the store as T, a pskstore capability.
func capability[T any](ks *Store, what string) (T, error) {
	t, ok := ks.Store.(T)
	if !ok {
		return t, fmt.Errorf("%s cannot %s", ks.Where, what)
	}
	return t, nil
}

func ctx() context.Context { return context.Background() }

// find returns the key of identity, or an error naming it (and a near
// miss under case folding, R7).
func (ks *Store) find(identity []byte) (pskstore.Key, error) {
	k, err := ks.Lookup(ctx(), identity)
	if errors.Is(err, pskstore.ErrUnknownIdentity) {
		return k, ks.notFound(identity)
	}
	return k, err
}

// notFound says identity is not in the store, suggesting a look-alike of
// a key file (a PostgreSQL store is not read whole for a message).
func (ks *Store) notFound(identity []byte) error {
	msg := fmt.Sprintf("identity %s not found in %s", export.Show(identity), ks.Where)
	if l, ok := ks.Store.(pskstore.Lister); ok && !ks.Shared {
		keys, _ := l.Keys(ctx())
		folded, ok := pskstore.FoldIdentity(identity)
		for _, k := range keys {
			if f, same := pskstore.FoldIdentity(k.Identity); ok && same && f == folded {
				msg += fmt.Sprintf(" (did you mean %s? identities are compared byte by byte)", export.Show(k.Identity))
				break
			}
		}
	}
	return errors.New(msg)
}

// sealing describes how keys are kept at rest, for notes.
func (ks *Store) sealing() string {
	if ks.KEK == nil {
		return "plaintext at rest (no key-encryption key)"
	}
	return "sealed at rest under kek " + ks.KEK.ID()
}

// liveNote says how running gateways apply a change that closes what (R10).
func (ks *Store) liveNote(what string) string {
	if ks.Shared {
		return "every gateway replica closes " + what + " within seconds (R10)"
	}
	return "the running gateway closes " + what + " when it reloads the file (R10)"
}
