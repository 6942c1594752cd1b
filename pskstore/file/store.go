package file

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

var (
	_ pskstore.Store   = (*Store)(nil)
	_ pskstore.Watcher = (*Store)(nil)
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

	reloadMu sync.Mutex // serializes reads of the file and notifications
	state    atomic.Pointer[state]
}

// state is one good version of the file.
type state struct {
	keys map[string]pskstore.Key // by identity, byte for byte (R7)
	sum  [32]byte                // keyed fingerprint of the file content
}

// Open loads the key file at path. It fails, naming the entry, line and
// field, if the file does not parse or any key breaks a MUST rule (R1–R8);
// SHOULD findings and a file readable by group or others are logged.
func Open(path string, opts ...Option) (*Store, error) {
	o := newOptions(opts)
	if o.policy.Fingerprinter == nil {
		o.policy.Fingerprinter = pskstore.NewFingerprinter(nil)
	}
	s := &Store{path: path, opts: o}
	if _, err := s.reload(o.logger); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		o.logger.Warn("psk store: key file is readable by group or others, use mode 0600",
			zap.String("path", path), zap.Stringer("mode", fi.Mode().Perm()))
	}
	return s, nil
}

// Path returns the path the store reads.
func (s *Store) Path() string { return s.path }

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

// Keys returns a copy of every key, sorted by identity.
func (s *Store) Keys() []pskstore.Key {
	st := s.state.Load()
	out := make([]pskstore.Key, 0, len(st.keys))
	for _, k := range st.keys {
		out = append(out, k.Clone())
	}
	slices.SortFunc(out, func(a, b pskstore.Key) int { return bytes.Compare(a.Identity, b.Identity) })
	return out
}

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
	data, err := readFile(s.path)
	if err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	sum := s.opts.policy.Fingerprinter.Fingerprint(data)
	old := s.state.Load()
	if old != nil && old.sum == sum {
		return nil, nil
	}
	entries, warnings, err := parse(s.path, data, s.opts)
	if err != nil {
		return nil, err
	}
	next := &state{keys: make(map[string]pskstore.Key, len(entries)), sum: sum}
	for _, e := range entries {
		next.keys[string(e.key.Identity)] = e.key
	}
	for _, w := range warnings {
		log.Warn("psk store: key accepted with a policy warning", zap.String("path", s.path), zap.NamedError("err", w))
	}
	s.state.Store(next)
	if old == nil {
		return nil, nil
	}
	changes := diff(old.keys, next.keys)
	s.changes.Notify(changes...)
	return changes, nil
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
