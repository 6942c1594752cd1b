package file

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// Writes. Each is a read-modify-write of the whole file under an advisory
// lock on its directory (two psk commands never lose each other's change):
// the file is read again first, so an edit made since the store last
// loaded it counts (and is reported to watchers), the change is checked
// with pskstore.CheckAdd against the keys then in the file, and the result
// is written atomically like Save (sealed under the store's KEK, in file
// order, new keys last) and becomes the store's state. Watchers see the
// difference (R10); a gateway watching the same file from another process
// sees it through WatchFile. A file that no longer loads is not written.

// Put adds keys; see pskstore.Putter.
func (s *Store) Put(ctx context.Context, keys ...pskstore.Key) error {
	return s.update(ctx, "put", func(cur []pskstore.Key) ([]pskstore.Key, error) {
		if err := pskstore.CheckAdd(cur, keys, s.opts.policy).Err(); err != nil {
			return nil, err
		}
		return slices.Concat(cur, normalized(keys)), nil
	})
}

// Delete revokes identity; see pskstore.Deleter.
func (s *Store) Delete(ctx context.Context, identity []byte) error {
	return s.update(ctx, "delete", func(cur []pskstore.Key) ([]pskstore.Key, error) {
		i := indexOf(cur, identity)
		if i < 0 {
			return nil, pskstore.ErrUnknownIdentity
		}
		return slices.Delete(slices.Clone(cur), i, i+1), nil
	})
}

// Rotate gives identity new key material; see pskstore.Rotator.
func (s *Store) Rotate(ctx context.Context, identity []byte, secret pskstore.Secret) error {
	return s.update(ctx, "rotate", func(cur []pskstore.Key) ([]pskstore.Key, error) {
		i := indexOf(cur, identity)
		if i < 0 {
			return nil, pskstore.ErrUnknownIdentity
		}
		k := cur[i].Clone()
		k.Secret = bytes.Clone(secret)
		if k.AllowLowEntropy {
			k.AllowLowEntropy, _ = pskstore.LowEntropy(k.Secret)
		}
		if k.Equal(cur[i]) {
			return cur, nil // the same key: nothing to rotate
		}
		others := slices.Delete(slices.Clone(cur), i, i+1)
		if err := pskstore.CheckAdd(others, []pskstore.Key{k}, s.opts.policy).Err(); err != nil {
			return nil, err
		}
		next := slices.Clone(cur)
		next[i] = k
		return next, nil
	})
}

// Replace replaces identity by keys; see pskstore.Replacer. The keys take
// identity's place in the file.
func (s *Store) Replace(ctx context.Context, identity []byte, keys []pskstore.Key) error {
	return s.update(ctx, "replace", func(cur []pskstore.Key) ([]pskstore.Key, error) {
		i := indexOf(cur, identity)
		if i < 0 {
			return nil, pskstore.ErrUnknownIdentity
		}
		others := slices.Delete(slices.Clone(cur), i, i+1)
		if err := pskstore.CheckAdd(others, keys, s.opts.policy).Err(); err != nil {
			return nil, err
		}
		return slices.Insert(others, i, normalized(keys)...), nil
	})
}

// Rekey re-seals every key under kek; see sealed.Rekeyer. The file is read
// under the store's current KEK, plaintext entries included whatever
// WithInsecurePlaintextKeys says, and the re-sealed file is parsed back
// under kek and compared before it replaces the old one. Afterwards the
// store writes and reads with kek.
func (s *Store) Rekey(ctx context.Context, kek *sealed.KEK) (sealed.Rekeyed, error) {
	var found sealed.Rekeyed
	if kek == nil {
		return found, fmt.Errorf("file: rekey: no new key-encryption key")
	}
	err := s.write(ctx, "rekey", kek, func(old *state) ([]byte, []pskstore.Key, error) {
		found = sealed.Rekeyed{Keys: len(old.order), Plaintext: len(old.plain)}
		if n := len(old.order) - len(old.plain); n > 0 {
			found.Sealed = map[string]int{s.opts.kek.ID(): n}
		}
		data, err := marshal(old.order, kek)
		if err != nil {
			return nil, nil, err
		}
		back, _, err := parse(s.path, data, options{policy: s.opts.policy, kek: kek})
		if err != nil {
			return nil, nil, fmt.Errorf("the re-sealed file does not load, nothing written: %w", err)
		}
		for i, e := range back {
			if !e.key.Equal(old.order[i]) {
				return nil, nil, fmt.Errorf("keys[%d] changed when re-sealed, nothing written", i)
			}
		}
		return data, old.order, nil
	})
	if err != nil {
		return sealed.Rekeyed{}, err
	}
	return found, nil
}

// update is a write whose change computes the new key list from the
// current one (which it must not modify); returning cur itself writes
// nothing.
func (s *Store) update(ctx context.Context, op string, change func(cur []pskstore.Key) ([]pskstore.Key, error)) error {
	return s.write(ctx, op, nil, func(old *state) ([]byte, []pskstore.Key, error) {
		next, err := change(old.order)
		if err != nil || sameSlice(next, old.order) {
			return nil, nil, err
		}
		data, err := marshal(next, s.opts.kek)
		return data, next, err
	})
}

// write runs one write under the directory lock and reloadMu: it re-reads
// the file, lets render produce the new content (nil: nothing to write),
// writes it atomically and makes the keys render returns (normalized, in
// file order) the store's state. A rekey passes the
// new KEK: the file is then re-read accepting plaintext keys, and the new
// content is sealed under rekeyTo, which the store uses from then on.
func (s *Store) write(ctx context.Context, op string, rekeyTo *sealed.KEK, render func(old *state) ([]byte, []pskstore.Key, error)) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("file: %s: %w", op, err)
	}
	unlock, err := lockDir(filepath.Dir(s.path))
	if err != nil {
		return fmt.Errorf("file: %s: %w", op, err)
	}
	defer unlock()
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	read := s.opts
	if rekeyTo != nil {
		read.plaintext = true
	}
	if _, err := s.reloadLocked(s.opts.logger, read, rekeyTo != nil); err != nil {
		return fmt.Errorf("file: %s: the key file does not load, nothing written: %w", op, err)
	}
	old := s.state.Load()
	data, keys, err := render(old)
	if err != nil {
		return fmt.Errorf("file: %s: %w", op, err)
	}
	if data == nil {
		return nil
	}
	if err := writeAtomic(s.path, data); err != nil {
		return fmt.Errorf("file: %s: %w", op, err)
	}
	if rekeyTo != nil {
		s.opts.kek = rekeyTo
	}
	plain := make(map[string]bool)
	if s.opts.kek == nil {
		for _, k := range keys {
			plain[string(k.Identity)] = true
		}
	}
	s.apply(old, newState(keys, plain, s.opts.policy.Fingerprinter.Fingerprint(data)))
	return nil
}

func indexOf(keys []pskstore.Key, identity []byte) int {
	return slices.IndexFunc(keys, func(k pskstore.Key) bool { return bytes.Equal(k.Identity, identity) })
}

// normalized returns normalized copies of keys, which the store keeps.
func normalized(keys []pskstore.Key) []pskstore.Key {
	out := make([]pskstore.Key, len(keys))
	for i, k := range keys {
		out[i] = k.Clone()
		out[i].Normalize()
	}
	return out
}

// sameSlice reports whether a and b are the same slice (not merely equal).
func sameSlice(a, b []pskstore.Key) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
