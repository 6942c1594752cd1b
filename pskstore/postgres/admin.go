package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// Put adds keys (insert-or-fail), all or none; see pskstore.Putter. One
// key is one INSERT; several go through PutMany. The keys are checked with
// pskstore.CheckAdd among themselves, and the database refuses an identity
// or key material it holds: the finding of pskstore.DuplicateIdentity
// (errors.Is pskstore.ErrDuplicateIdentity) or of pskstore.SharedKey,
// naming both identities by tag. Errors never carry key bytes nor the
// identity (R9). Every replica's Watch reports Added.
func (s *Store) Put(ctx context.Context, keys ...pskstore.Key) error {
	if len(keys) != 1 {
		return s.PutMany(ctx, keys, nil)
	}
	if err := pskstore.CheckAdd(nil, keys, s.policy).Err(); err != nil {
		return fmt.Errorf("postgres: put: %w", err)
	}
	k := keys[0].Clone()
	k.Normalize()
	r, err := toRow(s.kek.Load(), k)
	if err != nil {
		return fmt.Errorf("postgres: put: identity %s: %w", s.tag(k.Identity), err)
	}
	fp := s.fp.Fingerprint(k.Secret)
	err = s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO psk_keys (`+keyColumns+`, fingerprint)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`, r.args(fp[:])...)
		return err
	})
	if err != nil {
		return s.writeError("put", k.Identity, 0, err, s.holderOf(ctx, fp[:]))
	}
	return nil
}

// Rotate replaces the key material of identity with secret, keeping its
// bindings, after checking the result with pskstore.CheckKey and that no
// other identity holds secret (R4). An allow_low_entropy exemption is
// dropped when secret passes the entropy screen (R2): it was granted for
// the old key material. The old key is not opened, so Rotate also replaces
// a key sealed under another KEK. It returns pskstore.ErrUnknownIdentity
// if identity is absent. Every replica's Watch reports Rotated, so
// sessions under the old key close (R10); rotating to the same key changes
// nothing.
func (s *Store) Rotate(ctx context.Context, identity []byte, secret pskstore.Secret) error {
	var fp [32]byte
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			var (
				r   row
				old []byte
			)
			err := tx.QueryRow(ctx, `SELECT `+keyColumns+`, fingerprint FROM psk_keys WHERE identity = $1 FOR UPDATE`, identity).
				Scan(append(r.dest(), &old)...)
			if err != nil {
				return err
			}
			k, err := r.bindings(s.tag)
			if err != nil {
				return err
			}
			k.Secret = bytes.Clone(secret)
			if k.AllowLowEntropy {
				k.AllowLowEntropy, _ = pskstore.LowEntropy(k.Secret)
			}
			if err := pskstore.CheckAdd(nil, []pskstore.Key{k}, s.policy).Err(); err != nil {
				return err
			}
			fp = s.fp.Fingerprint(k.Secret)
			if bytes.Equal(old, fp[:]) {
				return nil // the same key: nothing to rotate
			}
			nr, err := toRow(s.kek.Load(), k)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE psk_keys SET key = $2, kek_id = $3, fingerprint = $4, allow_low_entropy = $5, updated_at = now()
				WHERE identity = $1`, identity, nr.key, nullable(nr.kekID), fp[:], k.AllowLowEntropy)
			return err
		})
	})
	var ke *KeyError
	switch {
	case err == nil:
		return nil
	case isPolicy(err), errors.As(err, &ke):
		return fmt.Errorf("postgres: rotate: %w", err)
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("postgres: rotate: %w", pskstore.ErrUnknownIdentity)
	}
	return s.writeError("rotate", identity, 0, err, s.holderOf(ctx, fp[:]))
}

// Delete removes identity, or returns pskstore.ErrUnknownIdentity: a
// revocation. Every replica's Watch reports Revoked, so its sessions close
// (R10).
func (s *Store) Delete(ctx context.Context, identity []byte) error {
	var n int64
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		tag, err := c.Exec(ctx, `DELETE FROM psk_keys WHERE identity = $1`, identity)
		n = tag.RowsAffected()
		return err
	})
	switch {
	case err != nil:
		return s.writeError("delete", identity, 0, err, nil)
	case n == 0:
		return fmt.Errorf("postgres: delete: %w", pskstore.ErrUnknownIdentity)
	}
	return nil
}

// Keys returns every key, sorted by identity (byte order). It reads the
// whole table: for audits and exports, not for the handshake path. A key
// that does not open fails it with a *KeyError.
func (s *Store) Keys(ctx context.Context) ([]pskstore.Key, error) {
	var keys []pskstore.Key
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+keyColumns+` FROM psk_keys ORDER BY identity`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r row
			if err := rows.Scan(r.dest()...); err != nil {
				return err
			}
			k, err := s.toKey(&r, false)
			if err != nil {
				return err
			}
			keys = append(keys, k)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: keys: %w", s.readError(err))
	}
	return keys, nil
}

// Count returns the number of identities.
func (s *Store) Count(ctx context.Context) (int64, error) {
	var n int64
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT count(*) FROM psk_keys`).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: count: %w", s.readError(err))
	}
	return n, nil
}

// Replace removes identity and adds keys in its place in one transaction,
// all or none; see pskstore.Replacer. keys are checked as PutMany checks
// them, and against the stored keys other than identity; a key that
// collides with a stored one fails Replace with the finding of
// pskstore.DuplicateIdentity or pskstore.SharedKey, Index naming it. It
// returns pskstore.ErrUnknownIdentity if identity is absent. Every
// replica's Watch reports identity Revoked and each key Added.
func (s *Store) Replace(ctx context.Context, identity []byte, keys []pskstore.Key) error {
	prints, err := s.checkBatch(keys)
	if err != nil {
		return fmt.Errorf("postgres: replace: %w", err)
	}
	kek := s.kek.Load()
	failed := -1
	err = s.withConn(ctx, func(c *pgx.Conn) error {
		failed = -1
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM psk_keys WHERE identity = $1`, identity)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return pskstore.ErrUnknownIdentity
			}
			for i, k := range keys {
				k = k.Clone()
				k.Normalize()
				r, err := toRow(kek, k)
				if err == nil {
					_, err = tx.Exec(ctx, `INSERT INTO psk_keys (`+keyColumns+`, fingerprint)
						VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`, r.args(prints[i][:])...)
				}
				if err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pskstore.ErrUnknownIdentity):
		return fmt.Errorf("postgres: replace: %w", err)
	case failed >= 0:
		return s.writeError("replace", keys[failed].Identity, failed, err, s.holderOf(ctx, prints[failed][:]))
	}
	return s.writeError("replace", identity, 0, err, nil)
}

// PlaintextIdentities returns the identities whose key is stored in
// plaintext, sorted; with a KEK and InsecurePlaintextKeys, those that
// Rekey would seal. For audits.
func (s *Store) PlaintextIdentities(ctx context.Context) ([][]byte, error) {
	var ids [][]byte
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT identity FROM psk_keys WHERE kek_id IS NULL ORDER BY identity`)
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[[]byte])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: plaintext identities: %w", s.readError(err))
	}
	return ids, nil
}
