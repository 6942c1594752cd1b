// Package memory is an in-memory pskstore.Store, for tests and for programs
// that provision keys themselves. It enforces the RFC 9257 policy of package
// pskstore on every key it is given and reports changes to watchers (R10).
// It does not persist anything.
package memory

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

var (
	_ pskstore.Store   = (*Store)(nil)
	_ pskstore.Watcher = (*Store)(nil)
	_ pskstore.Lister  = (*Store)(nil)
)

// Store holds keys in memory. It is safe for concurrent use; Lookup takes a
// read lock only. Keys are stored normalized (pskstore.Key.Normalize) and
// copied in and out, so callers never share memory with the store.
type Store struct {
	opts    pskstore.Options
	changes pskstore.Notifier

	mu      sync.RWMutex
	keys    map[string]pskstore.Key // by identity, byte for byte (R7)
	byPrint map[[32]byte]string     // keyed fingerprint -> identity (R4)
}

// New returns a Store holding keys, with the default options: Open(keys).
func New(keys ...pskstore.Key) (*Store, error) { return Open(keys) }

// Option configures Open.
type Option func(*options)

type options struct{ policy pskstore.Options }

// WithPolicy sets the policy options (maximum identity length, identity
// tagger, fingerprinter) every key is checked against. The zero value is
// the default; a nil Fingerprinter is replaced by a random per-store one.
func WithPolicy(p pskstore.Options) Option { return func(o *options) { o.policy = p } }

// Open returns a Store holding keys. The whole set is checked with
// pskstore.CheckKeys under the policy; any MUST finding refuses it with the
// *pskstore.PolicyError findings (SHOULD findings are not reported here:
// run CheckKeys to see them).
func Open(keys []pskstore.Key, opts ...Option) (*Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.policy.Fingerprinter == nil {
		o.policy.Fingerprinter = pskstore.NewFingerprinter(nil)
	}
	if err := pskstore.CheckKeys(keys, o.policy).Err(); err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	s := &Store{
		opts:    o.policy,
		keys:    make(map[string]pskstore.Key, len(keys)),
		byPrint: make(map[[32]byte]string, len(keys)),
	}
	for _, k := range keys {
		s.insert(k)
	}
	return s, nil
}

// insert stores a normalized copy of k, replacing any key of its identity.
// The caller holds mu for writing or owns s alone.
func (s *Store) insert(k pskstore.Key) {
	k = k.Clone()
	k.Normalize()
	id := string(k.Identity)
	if old, ok := s.keys[id]; ok {
		delete(s.byPrint, s.opts.Fingerprinter.Fingerprint(old.Secret))
	}
	s.keys[id] = k
	s.byPrint[s.opts.Fingerprinter.Fingerprint(k.Secret)] = id
}

// Lookup returns a copy of the key of identity, ErrUnknownIdentity if there
// is none, or ctx's error if ctx is done.
func (s *Store) Lookup(ctx context.Context, identity []byte) (pskstore.Key, error) {
	if err := ctx.Err(); err != nil {
		return pskstore.Key{}, fmt.Errorf("memory: lookup: %w", err)
	}
	s.mu.RLock()
	k, ok := s.keys[string(identity)]
	s.mu.RUnlock()
	if !ok {
		return pskstore.Key{}, pskstore.ErrUnknownIdentity
	}
	return k.Clone(), nil
}

// Put adds k, or replaces the key of an existing identity (a rotation), after
// checking it with pskstore.CheckKey and refusing key material already held
// under another identity (R4). Watchers see Added or Rotated.
//
// Unlike pskstore.Putter's Put it replaces an existing identity and takes
// no context: tests of the gateway use it to rotate keys in place.
func (s *Store) Put(k pskstore.Key) error {
	if err := pskstore.CheckKey(k, s.opts).Err(); err != nil {
		return fmt.Errorf("memory: put: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := string(k.Identity)
	if other, dup := s.byPrint[s.opts.Fingerprinter.Fingerprint(k.Secret)]; dup && other != id {
		tag := s.opts.Tagger.Tag
		return fmt.Errorf("memory: put: %w", pskstore.SharedKey(tag(k.Identity), 0, pskstore.KeyRef{Index: pskstore.InStore, Tag: tag([]byte(other))}))
	}
	kind := pskstore.Added
	if _, ok := s.keys[id]; ok {
		kind = pskstore.Rotated
	}
	s.insert(k)
	s.changes.Notify(pskstore.Change{Kind: kind, Identity: k.Identity})
	return nil
}

// Delete removes the key of identity and reports whether there was one.
// Watchers see Revoked.
func (s *Store) Delete(identity []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[string(identity)]
	if !ok {
		return false
	}
	delete(s.keys, string(identity))
	delete(s.byPrint, s.opts.Fingerprinter.Fingerprint(k.Secret))
	s.changes.Notify(pskstore.Change{Kind: pskstore.Revoked, Identity: identity})
	return true
}

// Keys returns a copy of every key, sorted by identity.
func (s *Store) Keys(ctx context.Context) ([]pskstore.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: keys: %w", err)
	}
	s.mu.RLock()
	out := make([]pskstore.Key, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k.Clone())
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b pskstore.Key) int { return bytes.Compare(a.Identity, b.Identity) })
	return out, nil
}

// Count returns how many keys the store holds.
func (s *Store) Count(context.Context) (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return int64(len(s.keys)), nil
}

// Watch reports every Put and Delete made after it returns, in order, until
// ctx is done (R10). It implements pskstore.Watcher.
func (s *Store) Watch(ctx context.Context) (<-chan pskstore.Change, error) {
	return s.changes.Watch(ctx)
}
