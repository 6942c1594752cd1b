package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

var (
	_ pskstore.Store    = (*Store)(nil)
	_ pskstore.Watcher  = (*Store)(nil)
	_ pskstore.Lister   = (*Store)(nil)
	_ pskstore.Putter   = (*Store)(nil)
	_ pskstore.Deleter  = (*Store)(nil)
	_ pskstore.Rotator  = (*Store)(nil)
	_ pskstore.Replacer = (*Store)(nil)
	_ sealed.Rekeyer    = (*Store)(nil)
)

// MaxFileSize is the largest key file read, in bytes (16 MiB).
const MaxFileSize = 16 << 20

// Store serves the keys of one file. It is safe for concurrent use: Lookup
// reads an immutable snapshot without locking, and a reload swaps the whole
// snapshot at once, so a lookup never sees a half-applied file.
type Store struct {
	path    string
	opts    options
	changes pskstore.Notifier

	reloadMu sync.Mutex // serializes reads and writes of the file, notifications and opts.kek
	state    atomic.Pointer[state]
	reloads  atomic.Uint64 // reloads that found a changed file and applied it
	failures atomic.Uint64 // reloads that failed
}

// state is one good version of the file.
type state struct {
	keys  map[string]pskstore.Key // by identity, byte for byte (R7)
	order []pskstore.Key          // in file order, which writes keep
	plain map[string]bool         // identities written in plaintext (key_hex, key_base64)
	sum   [32]byte                // keyed fingerprint of the file content
}

func newState(keys []pskstore.Key, plain map[string]bool, sum [32]byte) *state {
	st := &state{keys: make(map[string]pskstore.Key, len(keys)), order: keys, plain: plain, sum: sum}
	for _, k := range keys {
		st.keys[string(k.Identity)] = k
	}
	return st
}

// Open loads the key file at path. It fails, naming the entry, line and
// field, if the file does not parse or any key breaks a MUST rule (R1–R8);
// SHOULD findings and a file others may read (CheckMode) are logged. With
// WithCreate a missing file is an empty store.
func Open(path string, opts ...Option) (*Store, error) {
	o := newOptions(opts)
	if o.policy.Fingerprinter == nil {
		o.policy.Fingerprinter = pskstore.NewFingerprinter(nil)
	}
	s := &Store{path: path, opts: o}
	if _, err := s.reload(o.logger); err != nil {
		return nil, err
	}
	if err := CheckMode(path); err != nil {
		o.logger.Warn("psk store: "+err.Error(), zap.String("path", path))
	}
	return s, nil
}

// Path returns the path the store reads.
func (s *Store) Path() string { return s.path }

// Location names the store in messages: its path.
func (s *Store) Location() string { return s.path }

// Lookup returns a copy of the key of identity, pskstore.ErrUnknownIdentity
// if there is none, or ctx's error if ctx is done.
func (s *Store) Lookup(ctx context.Context, identity []byte) (pskstore.Key, error) {
	if err := ctx.Err(); err != nil {
		return pskstore.Key{}, fmt.Errorf("file: lookup: %w", err)
	}
	k, ok := s.state.Load().keys[string(identity)]
	if !ok {
		return pskstore.Key{}, pskstore.ErrUnknownIdentity
	}
	return k.Clone(), nil
}

// Keys returns a copy of every key, sorted by identity, as last loaded.
func (s *Store) Keys(ctx context.Context) ([]pskstore.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("file: keys: %w", err)
	}
	st := s.state.Load()
	out := make([]pskstore.Key, 0, len(st.keys))
	for _, k := range st.keys {
		out = append(out, k.Clone())
	}
	slices.SortFunc(out, func(a, b pskstore.Key) int { return bytes.Compare(a.Identity, b.Identity) })
	return out, nil
}

// Count returns how many keys the store holds, as last loaded.
func (s *Store) Count(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("file: count: %w", err)
	}
	return int64(len(s.state.Load().keys)), nil
}

// PlaintextIdentities returns the identities whose key the file holds in
// plaintext (key_hex, key_base64), sorted: with a KEK and
// WithInsecurePlaintextKeys, those a Rekey would seal. For audits.
func (s *Store) PlaintextIdentities(ctx context.Context) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("file: plaintext identities: %w", err)
	}
	var out [][]byte
	for id := range s.state.Load().plain {
		out = append(out, []byte(id))
	}
	slices.SortFunc(out, bytes.Compare)
	return out, nil
}

// ReloadStats returns how many reloads (Reload, WatchFile) applied a
// changed file and how many failed, since Open; for metrics.
func (s *Store) ReloadStats() (reloads, failures uint64) { return s.reloads.Load(), s.failures.Load() }

// Watch reports the changes of every later reload, computed by comparing
// the old and new key sets: Revoked for a removed identity, Rotated for one
// whose key or any binding changed, Added for a new one, in that order
// (R10). The channel closes when ctx is done.
func (s *Store) Watch(ctx context.Context) (<-chan pskstore.Change, error) {
	return s.changes.Watch(ctx)
}

// Reload re-reads the file. On any error the store keeps its last good
// state and the error names the line and field; on success watchers see the
// differences. A file whose content did not change is not parsed again.
func (s *Store) Reload() error {
	_, err := s.reload(s.opts.logger)
	return err
}

func (s *Store) reload(log *zap.Logger) ([]pskstore.Change, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	changes, err := s.reloadLocked(log, s.opts, false)
	if err != nil && s.state.Load() != nil {
		s.failures.Add(1)
	}
	return changes, err
}

// reloadLocked is reload with the options o; force parses the file even
// if it did not change. The caller holds reloadMu.
func (s *Store) reloadLocked(log *zap.Logger, o options, force bool) ([]pskstore.Change, error) {
	old := s.state.Load()
	data, err := readFile(s.path)
	if errors.Is(err, os.ErrNotExist) && o.create && (old == nil || len(old.keys) == 0 && old.sum == [32]byte{}) {
		if old == nil {
			s.state.Store(newState(nil, nil, [32]byte{}))
		}
		return nil, nil // a store to be created by its first write
	}
	if err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	sum := o.policy.Fingerprinter.Fingerprint(data)
	if old != nil && old.sum == sum && !force {
		return nil, nil
	}
	entries, warnings, err := parse(s.path, data, o)
	if err != nil {
		return nil, err
	}
	plain := make(map[string]bool)
	for _, e := range entries {
		if e.keyField != "key_sealed" {
			plain[string(e.key.Identity)] = true
		}
	}
	for _, w := range warnings {
		log.Warn("psk store: key accepted with a policy warning", zap.String("path", s.path), zap.NamedError("err", w))
	}
	changes := s.apply(old, newState(keysOf(entries), plain, sum))
	if old != nil && old.sum != sum {
		s.reloads.Add(1)
	}
	return changes, nil
}

// apply makes next the store's state and notifies watchers of what changed
// from old (nothing when old is nil: the first load). The caller holds
// reloadMu.
func (s *Store) apply(old, next *state) []pskstore.Change {
	s.state.Store(next)
	if old == nil {
		return nil
	}
	changes := diff(old.keys, next.keys)
	s.changes.Notify(changes...)
	return changes
}

// readFile reads path, refusing files larger than MaxFileSize.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, &ParseError{Path: path, Entry: -1, Err: fmt.Errorf("%w: larger than %d bytes", ErrSchema, MaxFileSize)}
	}
	return data, nil
}

// diff lists what changed from old to next: revocations first, so sessions
// are closed before anything else happens, then rotations, then additions;
// each group sorted by identity.
func diff(old, next map[string]pskstore.Key) []pskstore.Change {
	var revoked, rotated, added []pskstore.Change
	for id, k := range old {
		n, ok := next[id]
		switch {
		case !ok:
			revoked = append(revoked, pskstore.Change{Kind: pskstore.Revoked, Identity: k.Identity})
		case !n.Equal(k):
			rotated = append(rotated, pskstore.Change{Kind: pskstore.Rotated, Identity: k.Identity})
		}
	}
	for id, k := range next {
		if _, ok := old[id]; !ok {
			added = append(added, pskstore.Change{Kind: pskstore.Added, Identity: k.Identity})
		}
	}
	byID := func(a, b pskstore.Change) int { return bytes.Compare(a.Identity, b.Identity) }
	slices.SortFunc(revoked, byID)
	slices.SortFunc(rotated, byID)
	slices.SortFunc(added, byID)
	return slices.Concat(revoked, rotated, added)
}
