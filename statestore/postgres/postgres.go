// Package postgres keeps the gateway's durable state in PostgreSQL, the
// database replicas already share for their keys: each identity's
// registration, the sealed snapshots of established sessions with their
// owning replica, and the replicas' leases. A replica writes and restores
// the sessions it owns; when a replica's lease has run out, another one may
// take one of its sessions over (TakeOver), atomically, so exactly one
// replica owns a session at a time.
//
// It does not seal anything (snapshots arrive sealed by the gateway) and
// knows nothing of DTLS. Its tables live next to the key store's, created by
// its own migrations under an advisory lock.
package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/lwm2m-gateway/gateway/statestore"
)

// Store is the PostgreSQL state store of one replica. Safe for concurrent
// use.
type Store struct {
	pool     *pgxpool.Pool
	replica  int
	instance []byte // this process: a replica id's lease is held by one process at a time
}

// Option configures Open.
type Option func(*Store)

// WithReplica names the replica whose sessions this Store writes and
// restores (Config.ReplicaID of the gateway). Default 0.
func WithReplica(id int) Option { return func(s *Store) { s.replica = id } }

// maxConns bounds the store's pool: its writes are batched by the gateway.
const maxConns = 4

// Open connects to dsn and creates the tables the database lacks.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("statestore/postgres: %w", redact(err))
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("statestore/postgres: %w", redact(err))
	}
	s := &Store{pool: pool, instance: make([]byte, 16)}
	_, _ = rand.Read(s.instance)
	for _, o := range opts {
		o(s)
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the connections.
func (s *Store) Close() { s.pool.Close() }

// Replica is the id this Store writes sessions as.
func (s *Store) Replica() int { return s.replica }

// redact drops connection details from a pgx error that may quote a DSN.
func redact(err error) error {
	var pe interface{ SafeToRetry() bool }
	if errors.As(err, &pe) {
		return errors.New("cannot connect to the database")
	}
	return err
}

const schema = `
CREATE TABLE IF NOT EXISTS gateway_registrations (
	identity   bytea PRIMARY KEY,
	endpoint   text NOT NULL,
	location   text NOT NULL,
	lifetime_s integer NOT NULL,
	updated    timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_replicas (
	id          integer PRIMARY KEY,
	address     text NOT NULL,
	lease_until timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_sessions (
	id       bytea PRIMARY KEY,
	identity bytea NOT NULL,
	owner    integer NOT NULL,
	sealed   bytea NOT NULL,
	saved    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS gateway_sessions_owner ON gateway_sessions (owner);
CREATE TABLE IF NOT EXISTS gateway_session_cids (
	cid        bytea PRIMARY KEY,
	session_id bytea NOT NULL REFERENCES gateway_sessions (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS gateway_session_cids_session ON gateway_session_cids (session_id);
ALTER TABLE gateway_replicas ADD COLUMN IF NOT EXISTS instance bytea;
`

// migrate creates the tables under an advisory lock, so replicas starting
// together do it once.
func (s *Store) migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('gateway statestore migrate ' || current_schema(), 0))`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schema)
		return err
	})
	if err != nil {
		return fmt.Errorf("statestore/postgres: migrate: %w", err)
	}
	return nil
}

// LoadRegistrations returns every saved registration.
func (s *Store) LoadRegistrations(ctx context.Context) ([]statestore.Registration, error) {
	rows, err := s.pool.Query(ctx, `SELECT identity, endpoint, location, lifetime_s, updated FROM gateway_registrations`)
	if err != nil {
		return nil, fmt.Errorf("statestore/postgres: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (statestore.Registration, error) {
		var reg statestore.Registration
		var lt int32
		err := r.Scan(&reg.Identity, &reg.Endpoint, &reg.Location, &lt, &reg.Updated)
		reg.Lifetime = time.Duration(lt) * time.Second
		return reg, err
	})
}

// SaveRegistrations stores put and forgets del, in one transaction.
func (s *Store) SaveRegistrations(ctx context.Context, put []statestore.Registration, del [][]byte) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, id := range del {
			b.Queue(`DELETE FROM gateway_registrations WHERE identity = $1`, id)
		}
		for _, r := range put {
			b.Queue(`INSERT INTO gateway_registrations (identity, endpoint, location, lifetime_s, updated) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (identity) DO UPDATE SET endpoint = $2, location = $3, lifetime_s = $4, updated = $5`,
				r.Identity, r.Endpoint, r.Location, int32(r.Lifetime/time.Second), r.Updated)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("statestore/postgres: save registrations: %w", err)
	}
	return nil
}
