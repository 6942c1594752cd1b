package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// progressEvery is how many keys PutMany copies between progress calls; a
// variable for tests.
var progressEvery = 10000

// maxFindings bounds the policy findings one PutMany reports.
const maxFindings = 20

// PutMany adds keys in one transaction, all or none, for bulk imports,
// like Put. The whole set is checked first with pskstore.CheckAdd (on all
// CPUs), so a finding names the key by its index (PolicyError.Index) and
// tag; at most 20 findings are reported. Then the keys are streamed with
// COPY into a temporary table, checked against the keys already stored
// (an identity present: the finding of pskstore.DuplicateIdentity; key
// material held by another identity: of pskstore.SharedKey, both naming
// the keys[i] at fault), and moved with one INSERT … SELECT.
//
// progress, if not nil, is called with the number of keys copied so far
// every 10,000 keys, and with len(keys) once they are committed; calls
// come from one goroutine at a time, not necessarily the caller's.
//
// PutMany publishes no changes to watchers: it only adds identities, and
// no live session can depend on an identity that did not exist.
func (s *Store) PutMany(ctx context.Context, keys []pskstore.Key, progress func(n int)) error {
	prints, err := s.checkBatch(keys)
	if err != nil {
		return fmt.Errorf("postgres: put many: %w", err)
	}
	if len(keys) == 0 {
		if progress != nil {
			progress(0)
		}
		return nil
	}
	err = s.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('pskstore.publish', 'off', true)`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `CREATE TEMP TABLE psk_import (LIKE psk_keys INCLUDING DEFAULTS) ON COMMIT DROP`); err != nil {
				return err
			}
			src := &importSource{keys: keys, prints: prints, kek: s.kek.Load(), progress: progress}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"psk_import"}, importColumns, src); err != nil {
				return err
			}
			if err := s.importConflict(ctx, tx, keys); err != nil {
				return err
			}
			cols := strings.Join(importColumns, ", ")
			_, err := tx.Exec(ctx, `INSERT INTO psk_keys (`+cols+`) SELECT `+cols+` FROM psk_import`)
			return err
		})
	})
	switch {
	case isPolicy(err):
		return fmt.Errorf("postgres: put many: %w", err)
	case err != nil:
		return s.writeError("put many", nil, 0, err, nil)
	}
	if progress != nil {
		progress(len(keys))
	}
	return nil
}

// importColumns are the columns PutMany copies, in the order of row.args.
var importColumns = append(strings.Split(keyColumns, ", "), "fingerprint")

// importConflict finds a key of the import that collides with a stored
// one, by identity (R7, pskstore.ErrDuplicateIdentity) or by key material
// (R4), and names it by index and tag.
func (s *Store) importConflict(ctx context.Context, tx pgx.Tx, keys []pskstore.Key) error {
	index := func(id []byte) int {
		return slices.IndexFunc(keys, func(k pskstore.Key) bool { return bytes.Equal(k.Identity, id) })
	}
	var id, other []byte
	err := tx.QueryRow(ctx, `SELECT i.identity FROM psk_import i JOIN psk_keys k USING (identity) LIMIT 1`).Scan(&id)
	switch {
	case err == nil:
		return pskstore.DuplicateIdentity(s.tag(id), index(id))
	case !errors.Is(err, pgx.ErrNoRows):
		return err
	}
	err = tx.QueryRow(ctx, `SELECT i.identity, k.identity FROM psk_import i JOIN psk_keys k USING (fingerprint) LIMIT 1`).Scan(&id, &other)
	switch {
	case err == nil:
		return s.sharedKeyError(id, index(id), func() []byte { return other })
	case !errors.Is(err, pgx.ErrNoRows):
		return err
	}
	return nil
}

// importSource feeds keys to COPY, sealed and fingerprinted.
type importSource struct {
	keys     []pskstore.Key
	prints   [][32]byte  // keyed fingerprints of keys (R4)
	kek      *sealed.KEK // seals the keys; nil: plaintext
	progress func(int)
	n        int
	values   []any
	err      error
}

func (src *importSource) Next() bool {
	if src.err != nil || src.n >= len(src.keys) {
		return false
	}
	k := src.keys[src.n]
	k.Normalize()
	r, err := toRow(src.kek, k)
	if err != nil {
		src.err = fmt.Errorf("keys[%d]: %w", src.n, err)
		return false
	}
	src.values = r.args(src.prints[src.n][:])
	src.n++
	if src.progress != nil && src.n%progressEvery == 0 && src.n < len(src.keys) {
		src.progress(src.n)
	}
	return true
}

func (src *importSource) Values() ([]any, error) { return src.values, nil }

func (src *importSource) Err() error { return src.err }

// checkBatch applies pskstore.CheckAdd to keys among themselves and
// returns their fingerprints; at most maxFindings MUST findings are
// reported. (The SHOULD finding on identities equal under case folding
// refuses nothing and is not reported.)
func (s *Store) checkBatch(keys []pskstore.Key) ([][32]byte, error) {
	if f := pskstore.CheckAdd(nil, keys, s.policy).Must(); len(f) > 0 {
		return nil, f[:min(len(f), maxFindings)].Err()
	}
	prints := make([][32]byte, len(keys))
	for i, k := range keys {
		prints[i] = s.fp.Fingerprint(k.Secret)
	}
	return prints, nil
}
