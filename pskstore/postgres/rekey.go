package postgres

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// rekeyBatch is how many keys Rekey reads and re-seals at a time; a
// variable for tests.
var rekeyBatch = 5000

// Rekey re-seals every stored key under kek in one transaction, all or
// none, and reports the state it found: how many keys, how many of them in
// plaintext and how many sealed under which KEK (sealed.Rekeyer). Keys are
// opened under the
// store's current KEK; plaintext keys are accepted whatever
// InsecurePlaintextKeys says (Rekey is how a plaintext store gets sealed),
// and so are keys already sealed under kek (a Rekey run twice). A key that
// does not open, or whose key material no longer matches its fingerprint
// (R4: a row edited by hand), fails the whole Rekey with a *KeyError
// naming it by tag. Each re-sealed key is opened again under kek and
// compared before anything is written.
//
// Writers (Put, Rotate, Delete, PutMany, on every replica) wait for the
// Rekey to commit; lookups go on, reading the keys as they were. Rekey
// publishes no changes: key material and bindings stay, so no session
// closes. Once it commits, this Store seals and opens with kek; other
// replicas, and gateways still configured with the old KEK, fail lookups of
// the re-sealed keys (sealed.ErrWrongKEK) until restarted with kek: the
// sessions they hold are not affected.
func (s *Store) Rekey(ctx context.Context, kek *sealed.KEK) (sealed.Rekeyed, error) {
	if kek == nil {
		return sealed.Rekeyed{}, errors.New("postgres: rekey: no new key-encryption key")
	}
	var found sealed.Rekeyed
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		found = sealed.Rekeyed{Sealed: map[string]int{}}
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			// SHARE ROW EXCLUSIVE: no write of psk_keys commits meanwhile,
			// reads (lookups) go on.
			for _, q := range []string{
				`LOCK TABLE psk_keys IN SHARE ROW EXCLUSIVE MODE`,
				`SELECT set_config('pskstore.publish', 'off', true)`,
				`CREATE TEMP TABLE psk_rekey (identity bytea PRIMARY KEY, key bytea NOT NULL, kek_id bytea NOT NULL) ON COMMIT DROP`,
			} {
				if _, err := tx.Exec(ctx, q); err != nil {
					return err
				}
			}
			last := []byte{}
			for {
				batch, err := s.resealBatch(ctx, tx, kek, last, &found)
				if err != nil {
					return err
				}
				if len(batch) == 0 {
					break
				}
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{"psk_rekey"}, []string{"identity", "key", "kek_id"}, pgx.CopyFromRows(batch)); err != nil {
					return err
				}
				found.Keys += len(batch)
				last = batch[len(batch)-1][0].([]byte)
			}
			_, err := tx.Exec(ctx, `UPDATE psk_keys k SET key = r.key, kek_id = r.kek_id FROM psk_rekey r WHERE k.identity = r.identity`)
			return err
		})
	})
	var ke *KeyError
	switch {
	case err == nil:
		s.kek.Store(kek)
		if len(found.Sealed) == 0 {
			found.Sealed = nil
		}
		return found, nil
	case errors.As(err, &ke):
		return sealed.Rekeyed{}, fmt.Errorf("postgres: rekey: %w, nothing re-sealed", err)
	}
	return sealed.Rekeyed{}, s.writeError("rekey", nil, 0, err, nil)
}

// resealBatch reads up to rekeyBatch keys after identity last, in identity
// order, and returns them sealed under kek as psk_rekey rows; found counts
// them by the state they were in.
func (s *Store) resealBatch(ctx context.Context, tx pgx.Tx, kek *sealed.KEK, last []byte, found *sealed.Rekeyed) ([][]any, error) {
	rows, err := tx.Query(ctx, `SELECT identity, key, kek_id, fingerprint FROM psk_keys WHERE identity > $1 ORDER BY identity LIMIT $2`,
		last, rekeyBatch)
	if err != nil {
		return nil, err
	}
	type stored struct{ identity, key, kekID, fingerprint []byte }
	var read []stored
	var r stored
	if _, err := pgx.ForEachRow(rows, []any{&r.identity, &r.key, &r.kekID, &r.fingerprint}, func() error {
		read = append(read, r)
		return nil
	}); err != nil {
		return nil, err
	}
	newID := kekIDBytes(kek)
	out := make([][]any, 0, len(read))
	for _, r := range read {
		current := s.kek.Load()
		if bytes.Equal(r.kekID, newID) {
			current = kek // already sealed under kek
		}
		key, err := openWith(current, s.tag, r.identity, r.key, r.kekID, true)
		if err != nil {
			return nil, err
		}
		if r.kekID == nil {
			found.Plaintext++
		} else {
			found.Sealed[hex.EncodeToString(r.kekID)]++
		}
		fail := func(msg string) error {
			return &KeyError{Tag: s.tag(r.identity), Err: fmt.Errorf("%w: %s", ErrCorruptRow, msg)}
		}
		if fp := s.fp.Fingerprint(key); !hmac.Equal(fp[:], r.fingerprint) {
			return nil, fail("the key does not match its fingerprint (edited by hand?)")
		}
		v, err := kek.Seal(r.identity, key)
		if err != nil {
			return nil, err
		}
		if back, err := kek.Open(r.identity, v); err != nil || !bytes.Equal(back, key) {
			return nil, fail("the re-sealed key does not open to the same key")
		}
		out = append(out, []any{r.identity, v, newID})
	}
	return out, nil
}
