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
// one transaction. A session another replica has taken over is left alone
// and reported in a *statestore.NotOwnedError: it is no longer this
// replica's to write, and the gateway must stop serving it.
func (s *Store) SaveSnapshots(ctx context.Context, put []statestore.Snapshot, del [][]byte) error {
	var lost [][]byte
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		lost = nil
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
		br := tx.SendBatch(ctx, b)
		for range del {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return err
			}
		}
		for _, snap := range put {
			tag, err := br.Exec()
			if err != nil {
				br.Close()
				return err
			}
			if tag.RowsAffected() == 0 {
				lost = append(lost, snap.ID)
			}
			for range snap.CIDs {
				if _, err := br.Exec(); err != nil {
					br.Close()
					return err
				}
			}
		}
		return br.Close()
	})
	if err != nil {
		return fmt.Errorf("statestore/postgres: save snapshots: %w", err)
	}
	if len(lost) > 0 {
		return &statestore.NotOwnedError{IDs: lost}
	}
	return nil
}

// Heartbeat renews this replica's lease: it is alive, reachable at addr on
// the replicas' link, until lease from now (the database's clock). The
// lease of a replica id is held by one process: while another process
// holds it unexpired, Heartbeat returns statestore.ErrReplicaInUse (a
// second pod with the same ordinal must never serve the same sessions).
func (s *Store) Heartbeat(ctx context.Context, addr string, lease time.Duration) (time.Time, error) {
	var until time.Time
	err := s.pool.QueryRow(ctx, `INSERT INTO gateway_replicas (id, address, lease_until, instance) VALUES ($1, $2, now() + $3::interval, $4)
		ON CONFLICT (id) DO UPDATE SET address = $2, lease_until = now() + $3::interval, instance = $4
		WHERE gateway_replicas.instance = $4 OR gateway_replicas.instance IS NULL OR gateway_replicas.lease_until <= now()
		RETURNING lease_until`,
		s.replica, addr, lease.String(), s.instance).Scan(&until)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, statestore.ErrReplicaInUse
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("statestore/postgres: heartbeat: %w", err)
	}
	return until, nil
}

// Release gives this process's lease up to the next process with the same
// replica id (a graceful handoff): that process may renew it at once
// instead of waiting for it to run out, while the lease itself runs on, so
// the other replicas keep relaying to this replica id (not taking its
// sessions over) while it restarts, and take them over only if no process
// comes back before the lease runs out.
func (s *Store) Release(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `UPDATE gateway_replicas SET instance = NULL WHERE id = $1 AND instance = $2`, s.replica, s.instance)
	if err != nil {
		return fmt.Errorf("statestore/postgres: release: %w", err)
	}
	return nil
}

// Replicas lists the replicas.
func (s *Store) Replicas(ctx context.Context) ([]statestore.Replica, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, address, lease_until > now() FROM gateway_replicas ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("statestore/postgres: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[statestore.Replica])
}

// Owner returns the replica that owns the session of cid now and whether
// its lease runs; statestore.ErrNotTaken when no session has cid.
func (s *Store) Owner(ctx context.Context, cid []byte) (owner int, alive bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT s.owner, COALESCE((SELECT r.lease_until > now() FROM gateway_replicas r WHERE r.id = s.owner), false)
		FROM gateway_session_cids c JOIN gateway_sessions s ON s.id = c.session_id WHERE c.cid = $1`, cid).Scan(&owner, &alive)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, statestore.ErrNotTaken
	}
	if err != nil {
		return 0, false, fmt.Errorf("statestore/postgres: owner: %w", err)
	}
	return owner, alive, nil
}

// TakeOver makes this replica the owner of the session that issued cid,
// if its owner's lease has run out, and returns its snapshot. Exactly one
// replica succeeds however many try at once, and the owner's lease row is
// locked while the session changes hands: an owner that comes back renews
// its lease (its heartbeat waits) only after the takeover committed, so
// the sessions it then restores never include this one.
func (s *Store) TakeOver(ctx context.Context, cid []byte) (statestore.Snapshot, error) {
	var snap statestore.Snapshot
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var id []byte
		var owner int32
		err := tx.QueryRow(ctx, `SELECT s.id, s.owner FROM gateway_session_cids c JOIN gateway_sessions s ON s.id = c.session_id
			WHERE c.cid = $1 FOR UPDATE OF s`, cid).Scan(&id, &owner)
		if errors.Is(err, pgx.ErrNoRows) {
			return statestore.ErrNotTaken
		}
		if err != nil {
			return err
		}
		if int(owner) == s.replica {
			return statestore.ErrNotTaken
		}
		var alive bool
		err = tx.QueryRow(ctx, `SELECT lease_until > now() FROM gateway_replicas WHERE id = $1 FOR UPDATE`, owner).Scan(&alive)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if alive {
			return statestore.ErrNotTaken
		}
		return tx.QueryRow(ctx, `UPDATE gateway_sessions s SET owner = $2 WHERE id = $1
			RETURNING s.id, s.identity, s.sealed, s.saved,
			  ARRAY(SELECT cid FROM gateway_session_cids x WHERE x.session_id = s.id)`, id, s.replica).
			Scan(&snap.ID, &snap.Identity, &snap.Sealed, &snap.Saved, &snap.CIDs)
	})
	if errors.Is(err, statestore.ErrNotTaken) {
		return snap, err
	}
	if err != nil {
		return snap, fmt.Errorf("statestore/postgres: take over: %w", err)
	}
	return snap, nil
}
