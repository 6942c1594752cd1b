package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// lookupAttempts bounds the connections one Lookup tries: a connection the
// server dropped (restart, pg_terminate_backend) fails the first query on
// it; the pool's other connections, likely dropped too, are closed (idle
// ones at once, busy ones when released: pgxpool.Pool.Reset), and the
// lookup is retried on a new one before its deadline.
const lookupAttempts = 3

// Lookup returns the key of identity, pskstore.ErrUnknownIdentity if there
// is none, ctx's error if ctx is done, or, when the database does not
// answer within the lookup timeout or fails, an error wrapping
// pskstore.ErrUnavailable; a key the store cannot open (another KEK, a
// plaintext key where keys must be sealed, …) is an error wrapping both
// pskstore.ErrUnavailable and a *KeyError. While the database is known to
// be down, one lookup at a time probes it and the others fail at once, so
// handshakes fail fast and recovery needs no restart.
func (s *Store) Lookup(ctx context.Context, identity []byte) (pskstore.Key, error) {
	if err := ctx.Err(); err != nil {
		return pskstore.Key{}, fmt.Errorf("postgres: lookup: %w", err)
	}
	if len(identity) == 0 || len(identity) > MaxIdentityLen {
		return pskstore.Key{}, pskstore.ErrUnknownIdentity // no such row can exist
	}
	if s.down.Load() {
		if !s.probing.CompareAndSwap(false, true) {
			return pskstore.Key{}, fmt.Errorf("postgres: lookup: %w: database down", pskstore.ErrUnavailable)
		}
		defer s.probing.Store(false)
	}
	lctx, cancel := context.WithTimeout(context.WithValue(ctx, lookupKey{}, true), s.timeout)
	defer cancel()

	var (
		k   pskstore.Key
		err error
	)
	for range lookupAttempts {
		var lost bool
		err = s.withConn(lctx, func(c *pgx.Conn) error {
			var r row
			err := c.QueryRow(lctx, `SELECT `+keyColumns+` FROM psk_keys WHERE identity = $1`, identity).Scan(r.dest()...)
			if err != nil {
				lost = connLost(c, err)
				return err
			}
			k, err = s.toKey(&r, false)
			return err
		})
		if !lost || lctx.Err() != nil {
			break
		}
		s.pool.Reset()
	}

	var ke *KeyError
	switch {
	case err == nil:
		s.reachable()
		return k, nil
	case errors.Is(err, pgx.ErrNoRows):
		s.reachable()
		return pskstore.Key{}, pskstore.ErrUnknownIdentity
	case errors.As(err, &ke):
		s.reachable()
		return pskstore.Key{}, fmt.Errorf("postgres: lookup: %w: %w", pskstore.ErrUnavailable, err)
	case ctx.Err() != nil: // the caller gave up; says nothing about the database
		return pskstore.Key{}, fmt.Errorf("postgres: lookup: %w", ctx.Err())
	case errors.Is(err, ErrClosed):
		return pskstore.Key{}, fmt.Errorf("postgres: lookup: %w: %w", pskstore.ErrUnavailable, err)
	}
	if lctx.Err() != nil {
		err = fmt.Errorf("no answer within %v: %w", s.timeout, lctx.Err())
	}
	err = sanitize(err)
	s.unreachable(err)
	return pskstore.Key{}, fmt.Errorf("postgres: lookup: %w: %w", pskstore.ErrUnavailable, err)
}

// reachable records that the database answered.
func (s *Store) reachable() {
	if s.down.Load() && s.down.Swap(false) {
		s.log.Info("psk store: database reachable again")
	}
}

// unreachable records that a lookup could not reach the database.
func (s *Store) unreachable(err error) {
	if !s.down.Swap(true) {
		s.log.Warn("psk store: database unreachable; lookups fail until it answers", zap.Error(err))
	}
}
