package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// Put adds k (insert-or-fail) after checking it with pskstore.CheckKey
// under Config.Policy: a MUST finding refuses it with the
// *pskstore.PolicyError; an identity already present is refused with
// ErrDuplicateIdentity (Put never replaces: use Rotate); key material
// already held by another identity with a R4 *pskstore.PolicyError naming
// both by tag. Errors never carry key bytes nor the identity (R9). Every
// replica's Watch reports Added.
func (s *Store) Put(ctx context.Context, k pskstore.Key) error {
	if err := pskstore.CheckKey(k, s.policy).Err(); err != nil {
		return fmt.Errorf("postgres: put: %w", err)
	}
	k = k.Clone()
	k.Normalize()
	r, err := toRow(k)
	if err != nil {
		return fmt.Errorf("postgres: put: identity %s: %w", s.tag(k.Identity), err)
	}
	fp := s.fp.Fingerprint(k.Secret)
	err = s.pool.withConn(ctx, true, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO psk_keys (`+keyColumns+`, fingerprint)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`, r.args(fp[:])...)
		return err
	})
	if err != nil {
		return s.writeError("put", k.Identity, err, s.holderOf(ctx, fp[:]))
	}
	return nil
}

// Rotate replaces the key material of identity with secret, keeping its
// bindings, after checking the result with pskstore.CheckKey and that no
// other identity holds secret (R4). It returns pskstore.ErrUnknownIdentity
// if identity is absent. Every replica's Watch reports Rotated, so sessions
// under the old key close (R10); rotating to the same key changes nothing.
func (s *Store) Rotate(ctx context.Context, identity []byte, secret pskstore.Secret) error {
	var fp [32]byte
	err := s.pool.withConn(ctx, true, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			var r row
			err := tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM psk_keys WHERE identity = $1 FOR UPDATE`, identity).Scan(r.dest()...)
			if err != nil {
				return err
			}
			k, err := r.toKey(s.tag)
			if err != nil {
				return err
			}
			k.Secret = bytes.Clone(secret)
			if err := pskstore.CheckKey(k, s.policy).Err(); err != nil {
				return err
			}
			nr, err := toRow(k)
			if err != nil {
				return err
			}
			fp = s.fp.Fingerprint(k.Secret)
			_, err = tx.Exec(ctx, `UPDATE psk_keys SET key = $2, fingerprint = $3, updated_at = now() WHERE identity = $1`,
				identity, nr.key, fp[:])
			return err
		})
	})
	if err == nil {
		return nil
	}
	if isPolicy(err) {
		return fmt.Errorf("postgres: rotate: %w", err)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("postgres: rotate: %w", pskstore.ErrUnknownIdentity)
	}
	return s.writeError("rotate", identity, err, s.holderOf(ctx, fp[:]))
}

// Delete removes identity and reports whether it existed: a revocation.
// Every replica's Watch reports Revoked, so its sessions close (R10).
func (s *Store) Delete(ctx context.Context, identity []byte) (bool, error) {
	var n int64
	err := s.pool.withConn(ctx, true, func(c *pgx.Conn) error {
		tag, err := c.Exec(ctx, `DELETE FROM psk_keys WHERE identity = $1`, identity)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return false, s.writeError("delete", identity, err, nil)
	}
	return n > 0, nil
}

// Keys returns every key, sorted by identity (byte order). It reads the
// whole table: for audits and exports, not for the handshake path.
func (s *Store) Keys(ctx context.Context) ([]pskstore.Key, error) {
	var keys []pskstore.Key
	err := s.pool.withConn(ctx, true, func(c *pgx.Conn) error {
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
			k, err := r.toKey(s.tag)
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
	err := s.pool.withConn(ctx, true, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT count(*) FROM psk_keys`).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: count: %w", s.readError(err))
	}
	return n, nil
}
