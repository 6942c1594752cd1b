package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/statestore"
	"go.uber.org/zap"
)

// Sessions that survive restarts (DESIGN §1: the gateway owns each
// session's small state, which can be snapshotted).
//
// With Config.Sessions set, a checkpointer writes a sealed snapshot of every
// lean-plane session that changed since the last one, every
// CheckpointInterval; Handoff (a graceful stop) writes all of them and ends
// the sessions without close_notify; the next process restores them at
// Serve before it reads a datagram, so devices continue without a
// handshake.
//
// A write sequence number is never used twice under one key, across
// crashes too. Each snapshot carries a reservation: the record number the
// session will start from if it is restored from that snapshot (its next
// write number plus reserveBlock). A session seals records only below the
// reservation of its last persisted snapshot — and below the one it is
// being written with, from the moment that is taken — so whichever
// snapshot a restore finds, every record number the old process used lies
// below where the new one starts. A session nearing its limit asks for a
// checkpoint at once; one at its limit holds its records (they are dropped
// and CoAP retransmits) until the checkpoint lands. A session not yet in any
// snapshot is unlimited: nothing could restore it.
//
// The receive side is restored from the snapshot too, so a record the
// device sent between that checkpoint and a crash can be replayed to the
// restored session once: the window is at most CheckpointInterval of a
// session's traffic (records older than the window's 64 are refused as
// before). A graceful Handoff has no such window.

// reserveBlock is how many record numbers a snapshot reserves. DTLS 1.3
// peers reconstruct sequence numbers from 16 bits, so a restored session
// may not jump by 2^15 or more (internal/record refuses it).
const reserveBlock = 4096

// SessionStore persists sealed session snapshots (statestore implements
// it: a snapshot file, or PostgreSQL). Implementations must be safe for
// concurrent use.
type SessionStore interface {
	LoadSnapshots(ctx context.Context) ([]statestore.Snapshot, error)
	SaveSnapshots(ctx context.Context, put []statestore.Snapshot, del [][]byte) error
}

// Sealer seals session snapshots (pskstore/sealed.Sealer: the key store's
// KEK, a key of its own for snapshots); context is the PSK identity.
type Sealer interface {
	Seal(context, plaintext []byte) []byte
	Open(context, sealed []byte) ([]byte, error)
}

// newSessionID names a session's snapshot.
func newSessionID() (id [16]byte) {
	_, _ = rand.Read(id[:])
	return id
}

// hashKey is what a snapshot keeps of the PSK: enough to see it changed.
func hashKey(secret []byte) (h [16]byte) {
	sum := sha256.Sum256(secret)
	copy(h[:], sum[:])
	return h
}

// needsCheckpointLocked reports whether the session's snapshot is out of
// date: traffic since the last one, none yet, or its reservation running
// out.
func (s *session) needsCheckpointLocked() bool {
	if s.lean == nil {
		return false // the pion plane cannot be snapshotted without ending it
	}
	return s.active || s.limit == 0 || s.lean.rec.NextWriteSeq()+reserveBlock/2 > s.limit
}

// takeLocked builds the session's snapshot and its reservation. From now
// on the session seals below the reservation even before it is persisted
// (see above), unless an earlier persisted one is lower.
func (s *session) takeLocked(now time.Time) (*sessionState, error) {
	rec, err := s.lean.rec.MarshalBinary()
	if err != nil {
		return nil, err
	}
	limit := s.lean.rec.NextWriteSeq() + reserveBlock
	if s.limit == 0 {
		s.limit = limit
	}
	s.active = false
	st := &sessionState{
		id: s.id, keyHash: s.keyHash,
		saved: now, active: time.Unix(0, s.lastActive.Load()), established: s.established,
		identity: s.identity, endpoint: s.endpoint, backend: s.backend, serverName: s.params.serverName,
		params: s.params, listenerIndex: uint8(s.l.index), listener: s.l.pc.LocalAddr().String(), peer: s.peer,
		cids: s.cids, limit: limit, record: rec,
	}
	st.location, st.lifetime, _ = s.binding.Registered()
	for _, up := range s.ups {
		st.ups = append(st.ups, upstreamState{name: up.name, local: up.local})
	}
	return st, nil
}

// checkpoint seals and saves the snapshots of the sessions that need one
// (every lean session when all), and forgets closed ones. It returns how
// many it wrote.
func (srv *Server) checkpoint(ctx context.Context, all bool) (int, error) {
	store := srv.cfg.Sessions
	now := time.Now()
	type taken struct {
		s     *session
		limit uint64
	}
	var done []taken
	var put []statestore.Snapshot
	for _, s := range srv.table.snapshot() {
		s.mu.Lock()
		if s.closed || s.lean == nil || (!all && !s.needsCheckpointLocked()) {
			s.mu.Unlock()
			continue
		}
		st, err := s.takeLocked(now)
		s.mu.Unlock()
		if err != nil {
			srv.log.Error("cannot snapshot session", zap.String("identity_tag", srv.tag(s.identity)), zap.Error(err))
			continue
		}
		put = append(put, statestore.Snapshot{ID: st.id[:], Identity: st.identity,
			Sealed: srv.cfg.SnapshotSealer.Seal(st.identity, st.encode()), Saved: now, CIDs: st.cids})
		done = append(done, taken{s, st.limit})
	}
	srv.snapMu.Lock()
	del := srv.closedIDs
	srv.closedIDs = nil
	srv.snapMu.Unlock()
	if len(put)+len(del) == 0 {
		return 0, nil
	}
	err := store.SaveSnapshots(ctx, put, del)
	var notOwned *statestore.NotOwnedError
	if err != nil && !errors.As(err, &notOwned) {
		srv.stats.checkpointErrors.Add(1)
		srv.snapMu.Lock()
		srv.closedIDs = append(srv.closedIDs, del...)
		srv.snapMu.Unlock()
		return 0, err
	}
	lost := map[string]bool{}
	if notOwned != nil {
		for _, id := range notOwned.IDs {
			lost[string(id)] = true
		}
	}
	for _, t := range done {
		if lost[string(t.s.id[:])] {
			// Another replica took the session over: it is theirs now.
			t.s.closeKeepingSnapshot("taken over by another replica")
			continue
		}
		t.s.mu.Lock()
		t.s.limit = max(t.s.limit, t.limit)
		t.s.mu.Unlock()
	}
	srv.stats.snapshotsWritten.Add(uint64(len(put)))
	return len(put), nil
}

// checkpointer runs checkpoint every CheckpointInterval, and at once when a
// session runs out of reserved record numbers, until stop is closed.
func (srv *Server) checkpointer(stop <-chan struct{}) {
	t := time.NewTicker(srv.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		case <-srv.urge:
		}
		ctx, cancel := context.WithTimeout(context.Background(), checkpointTimeout)
		if _, err := srv.checkpoint(ctx, false); err != nil {
			srv.sampled.Error("checkpoint failed; sessions keep their last reservation and retry", zap.Error(err))
		}
		cancel()
		srv.retryRestores()
		if srv.restoreLoadFailed.Load() {
			rctx, rcancel := context.WithTimeout(context.Background(), restoreTimeout)
			srv.restore(rctx)
			rcancel()
		}
	}
}

// checkpointTimeout bounds one checkpoint write.
const checkpointTimeout = 30 * time.Second

// urgeCheckpoint asks the checkpointer for a checkpoint now.
func (srv *Server) urgeCheckpoint() {
	select {
	case srv.urge <- struct{}{}:
	default:
	}
}

// mayWriteLocked reports whether a datagram the record layer sealed may
// leave: its record number lies below the session's reservation. A
// datagram above it is dropped (never sent, so its nonce never reaches the
// wire) and a checkpoint is urged; one nearing it urges a checkpoint too.
func (s *session) mayWriteLocked() bool {
	if s.limit == 0 || s.lean == nil {
		return true
	}
	if c := s.srv.cluster; c != nil && !c.mayServe() {
		// Fenced (cluster.go): another replica may own it by now.
		s.srv.stats.drop(dropReserve)
		return false
	}
	next := s.lean.rec.NextWriteSeq()
	if next+reserveBlock/2 > s.limit {
		s.srv.urgeCheckpoint()
	}
	if next > s.limit {
		s.srv.stats.drop(dropReserve)
		return false
	}
	return true
}

// forgetSnapshotLocked deletes a closed session's snapshot at the next
// checkpoint (not during a Handoff: those snapshots are the point).
func (s *session) forgetSnapshotLocked() {
	srv := s.srv
	if srv.cfg.Sessions == nil || s.limit == 0 || srv.handingOff.Load() {
		return
	}
	srv.snapMu.Lock()
	srv.closedIDs = append(srv.closedIDs, s.id[:])
	srv.snapMu.Unlock()
}

// Handoff ends this process's part in its sessions so that the next process
// continues them without a handshake (Config.Sessions): it stops reading
// from devices and backends, writes every session's snapshot, closes the
// sessions without close_notify (the devices must not be told) and closes
// the server. Handshakes in progress are dropped; devices retransmit their
// ClientHello to the next process. Without Config.Sessions it is Shutdown.
func (srv *Server) Handoff(ctx context.Context) error {
	if srv.cfg.Sessions == nil {
		return srv.Shutdown(ctx)
	}
	srv.closing.Store(true)
	srv.handingOff.Store(true)
	srv.mu.Lock()
	srv.closeListenersLocked()
	if srv.cancel != nil {
		srv.cancel()
	}
	pollers := srv.pollers
	srv.mu.Unlock()
	srv.readers.Wait()
	for _, p := range pollers {
		p.stop()
	}
	n, err := srv.checkpoint(ctx, true)
	if err != nil {
		err = fmt.Errorf("gateway: handoff: %w", err)
	}
	for _, s := range srv.table.snapshot() {
		s.close("handed off", false)
	}
	if c := srv.cluster; c != nil && err == nil {
		// The next process with this replica id may renew the lease at
		// once instead of waiting for it to run out; until then the
		// other replicas relay to this id rather than take over.
		if rerr := c.store.Release(ctx); rerr != nil {
			srv.log.Warn("cannot release the replica lease; the next process waits for it to run out", zap.Error(rerr))
		}
	}
	srv.log.Info("sessions handed off", zap.Int("snapshots", n), zap.Error(err))
	_ = srv.Close()
	return err
}

// restore continues the sessions of the last process from their snapshots,
// before the read loops start: each snapshot is opened (the KEK must be the
// one it was sealed under), decoded, checked — not older than its session's
// idle limit, a listener at the same address, the identity's key unchanged
// in the store — and becomes a session with its upstream sockets rebound
// to the same local ports. Refused snapshots are logged with the reason
// and deleted; nothing else is affected. Snapshots whose key the store
// could not be asked about (store down) are retried at each checkpoint.
func (srv *Server) restore(ctx context.Context) {
	snaps, err := srv.cfg.Sessions.LoadSnapshots(ctx)
	if err != nil {
		if !srv.restoreLoadFailed.Swap(true) {
			srv.log.Error("cannot load session snapshots (the store is down?): retrying at each checkpoint; devices that come first handshake again", zap.Error(err))
		}
		return
	}
	if srv.restoreLoadFailed.Swap(false) {
		srv.log.Info("session snapshots loaded after an earlier failure")
	}
	// A late load (the store was down at start) also returns the snapshots
	// this process wrote since: those sessions are live here.
	live := map[string]bool{}
	for _, s := range srv.table.snapshot() {
		live[string(s.id[:])] = true
	}
	// The newest session of an identity wins (one session per identity).
	sort.Slice(snaps, func(i, j int) bool { return snaps[i].Saved.After(snaps[j].Saved) })
	var del [][]byte
	restored := 0
	for _, snap := range snaps {
		if live[string(snap.ID)] {
			continue
		}
		switch err := srv.restoreOne(snap); {
		case err == nil:
			restored++
		case errors.Is(err, errRestoreLater):
			srv.snapMu.Lock()
			srv.pendingRestores = append(srv.pendingRestores, snap)
			srv.snapMu.Unlock()
		default:
			del = append(del, snap.ID)
		}
	}
	if len(del) > 0 {
		if err := srv.cfg.Sessions.SaveSnapshots(ctx, nil, del); err != nil {
			srv.log.Warn("cannot delete refused snapshots", zap.Error(err))
		}
	}
	if restored > 0 {
		// Restored sessions seal nothing before a snapshot of theirs
		// reserves numbers above the restored reservation.
		if _, err := srv.checkpoint(ctx, true); err != nil {
			srv.log.Error("checkpoint after restore failed; restored sessions wait for the next one", zap.Error(err))
		}
	}
	srv.log.Info("sessions restored", zap.Int("restored", restored), zap.Int("refused", len(del)),
		zap.Int("waiting_for_store", len(srv.pendingRestores)))
}

// errRestoreLater: the key store could not be asked; try again later.
var errRestoreLater = errors.New("gateway: key store unavailable, restore later")

// retryRestores retries snapshots whose key lookup failed at start.
func (srv *Server) retryRestores() {
	srv.snapMu.Lock()
	pending := srv.pendingRestores
	srv.pendingRestores = nil
	srv.snapMu.Unlock()
	var del [][]byte
	for _, snap := range pending {
		switch err := srv.restoreOne(snap); {
		case err == nil:
		case errors.Is(err, errRestoreLater):
			srv.snapMu.Lock()
			srv.pendingRestores = append(srv.pendingRestores, snap)
			srv.snapMu.Unlock()
		default:
			del = append(del, snap.ID)
		}
	}
	if len(del) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), checkpointTimeout)
		_ = srv.cfg.Sessions.SaveSnapshots(ctx, nil, del)
		cancel()
	}
}

// restoreOne rebuilds one session; the error's reason is counted.
func (srv *Server) restoreOne(snap statestore.Snapshot) error {
	refuse := func(reason string, err error) error {
		srv.stats.restoreRefused(reason)
		srv.log.Warn("session snapshot refused", zap.String("reason", reason),
			zap.String("identity_tag", srv.tag(snap.Identity)), zap.Error(err))
		return fmt.Errorf("%s: %w", reason, err)
	}
	plain, err := srv.cfg.SnapshotSealer.Open(snap.Identity, snap.Sealed)
	if err != nil {
		return refuse("unseal", err) // another KEK, or altered
	}
	st, err := decodeSessionState(plain)
	if err != nil {
		return refuse("corrupt", err)
	}
	now := time.Now()
	limit := max(srv.cfg.IdleTimeout, st.lifetime+srv.cfg.RegistrationGrace)
	if idle := now.Sub(st.active); idle > limit || now.Sub(st.saved) > maxSnapshotAge {
		return refuse("stale", fmt.Errorf("idle for %s, limit %s", idle.Round(time.Second), limit))
	}
	if cur := srv.table.withIdentity(st.identity); len(cur) > 0 && !srv.cfg.AllowParallelSessions {
		return refuse("superseded", errors.New("a newer session of the identity is live"))
	}
	l := srv.listenerAt(st.listener, int(st.listenerIndex))
	if l == nil {
		return refuse("listener", fmt.Errorf("no listener at %s", st.listener))
	}
	key, err := srv.lookupKey(st.identity)
	switch {
	case errors.Is(err, pskstore.ErrUnknownIdentity):
		return refuse("revoked", err)
	case err != nil:
		srv.stats.restoreRefused("store_unavailable")
		return errRestoreLater
	case hashKey(key.Secret) != st.keyHash:
		return refuse("key_changed", errors.New("the identity's key was rotated"))
	}
	s, err := srv.sessionFromState(l, st, key.Endpoint)
	if err != nil {
		return refuse("record", err)
	}
	peer := s.peer // once routed, the read loop may move it (under s.mu)
	srv.table.addRestored(s, s.cids)
	srv.stats.snapshotsRestored.Add(1)
	srv.log.Debug("session restored", zap.String("identity_tag", srv.tag(s.identity)), zap.Stringer("remote", peer))
	return nil
}

// listenerAt is the listener bound to addr (a restart on the same host),
// or else the one at index in the configuration (another replica, whose
// listeners have other addresses).
func (srv *Server) listenerAt(addr string, index int) *listener {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, l := range srv.listeners {
		if l.pc.LocalAddr().String() == addr {
			return l
		}
	}
	if srv.cfg.Cluster != nil && index < len(srv.listeners) {
		return srv.listeners[index]
	}
	return nil
}
