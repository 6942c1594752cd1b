package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/lwm2m-gateway/gateway/statestore"
)

// LoadSnapshots returns the snapshots this replica owns.
func (s *Store) LoadSnapshots(ctx context.Context) ([]statestore.Snapshot, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, identity, sealed, saved,
		ARRAY(SELECT cid FROM gateway_session_cids c WHERE c.session_id = s.id)
		FROM gateway_sessions s WHERE owner = $1`, s.replica)
	if err != nil {
		return nil, fmt.Errorf("statestore/postgres: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (statestore.Snapshot, error) {
		var snap statestore.Snapshot
		err := r.Scan(&snap.ID, &snap.Identity, &snap.Sealed, &snap.Saved, &snap.CIDs)
		return snap, err
	})
}

// SaveSnapshots writes put as this replica's sessions and deletes del, in
// one transaction. A row another replica has taken over is left alone:
// the session is no longer this replica's to write.
func (s *Store) SaveSnapshots(ctx context.Context, put []statestore.Snapshot, del [][]byte) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, id := range del {
			b.Queue(`DELETE FROM gateway_sessions WHERE id = $1 AND owner = $2`, id, s.replica)
		}
		for _, snap := range put {
			b.Queue(`INSERT INTO gateway_sessions (id, identity, owner, sealed, saved) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (id) DO UPDATE SET sealed = $4, saved = $5 WHERE gateway_sessions.owner = $3`,
				snap.ID, snap.Identity, s.replica, snap.Sealed, snap.Saved)
			for _, cid := range snap.CIDs {
				b.Queue(`INSERT INTO gateway_session_cids (cid, session_id) VALUES ($1, $2)
					ON CONFLICT (cid) DO UPDATE SET session_id = $2`, cid, snap.ID)
			}
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("statestore/postgres: save snapshots: %w", err)
	}
	return nil
}

// Heartbeat renews this replica's lease: it is alive, reachable at addr on
// the replicas' link, until lease from now (the database's clock). It
// returns the lease's end by the database's clock.
func (s *Store) Heartbeat(ctx context.Context, addr string, lease time.Duration) (time.Time, error) {
	var until time.Time
	err := s.pool.QueryRow(ctx, `INSERT INTO gateway_replicas (id, address, lease_until) VALUES ($1, $2, now() + $3::interval)
		ON CONFLICT (id) DO UPDATE SET address = $2, lease_until = now() + $3::interval RETURNING lease_until`,
		s.replica, addr, lease.String()).Scan(&until)
	if err != nil {
		return time.Time{}, fmt.Errorf("statestore/postgres: heartbeat: %w", err)
	}
	return until, nil
}

// Replicas lists the replicas.
func (s *Store) Replicas(ctx context.Context) ([]statestore.Replica, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, address, lease_until > now() FROM gateway_replicas ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("statestore/postgres: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[statestore.Replica])
}

// TakeOver makes this replica the owner of the session that issued cid,
// if its owner's lease has run out, and returns its snapshot. Exactly one
// replica succeeds however many try at once.
func (s *Store) TakeOver(ctx context.Context, cid []byte) (statestore.Snapshot, error) {
	var snap statestore.Snapshot
	err := s.pool.QueryRow(ctx, `UPDATE gateway_sessions s SET owner = $2
		FROM gateway_session_cids c
		WHERE c.cid = $1 AND s.id = c.session_id AND s.owner <> $2
		  AND NOT EXISTS (SELECT 1 FROM gateway_replicas r WHERE r.id = s.owner AND r.lease_until > now())
		RETURNING s.id, s.identity, s.sealed, s.saved,
		  ARRAY(SELECT cid FROM gateway_session_cids x WHERE x.session_id = s.id)`, cid, s.replica).
		Scan(&snap.ID, &snap.Identity, &snap.Sealed, &snap.Saved, &snap.CIDs)
	if errors.Is(err, pgx.ErrNoRows) {
		return snap, statestore.ErrNotTaken
	}
	if err != nil {
		return snap, fmt.Errorf("statestore/postgres: take over: %w", err)
	}
	return snap, nil
}
