package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// Channel is the PostgreSQL notification channel of changes. The payload of
// a notification is the id of the writing transaction (xid8 as text); the
// changes themselves are read from psk_change_log.
const Channel = "psk_changes"

const (
	// listenWait bounds how long the first Watch waits for the listener to
	// connect before returning anyway.
	listenWait = 5 * time.Second
	// minBackoff and maxBackoff bound the listener's reconnect delay,
	// doubled after each failed attempt, with jitter.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
	// defaultPollEvery is how long the listener waits for a notification
	// before pinging, so a connection that died silently is noticed.
	defaultPollEvery = 15 * time.Second
	// seenIDs is how many recent change ids the listener remembers, so a
	// change read both by replay and by its notification is reported once.
	seenIDs = 4096
	// queryTimeout bounds the listener's queries.
	queryTimeout = 30 * time.Second
)

// Watch reports every change of psk_keys committed after it returns, by any
// replica or by hand (psql), in commit order within a transaction:
// Added, Rotated (new key or changed bindings), Revoked (R10). The channel
// closes when ctx is done. PutMany publishes nothing.
//
// One listener connection per Store serves every Watch. It is opened by the
// first Watch, which waits for it (at most 5s, or until ctx is done). When
// the connection drops, the listener reconnects with exponential backoff
// (100ms to 10s) and then replays the change log from the last change it
// saw, so changes committed during the outage are reported late rather than
// lost, provided the outage is shorter than the log's one-day retention.
// Changes committed before the listener first connected are not reported.
//
// Stores in other schemas of the same database share the channel; each
// reads only its own change log, so they do not see each other's changes.
func (s *Store) Watch(ctx context.Context) (<-chan pskstore.Change, error) {
	ch, err := s.changes.Watch(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: watch: %w", err)
	}
	s.listenMu.Lock()
	if s.closed {
		s.listenMu.Unlock()
		return nil, fmt.Errorf("postgres: watch: %w", ErrClosed)
	}
	if !s.listening {
		s.listening = true
		s.wg.Add(1)
		go s.listenLoop()
	}
	s.listenMu.Unlock()

	t := time.NewTimer(listenWait)
	defer t.Stop()
	select {
	case <-s.listenReady:
	case <-ctx.Done():
	case <-s.done:
	case <-t.C:
		s.log.Warn("psk store: change listener not connected yet; changes are reported once it is")
	}
	return ch, nil
}

// listenState is the listener's memory across connections.
type listenState struct {
	lastID int64 // highest change id seen; -1 before the first connection
	floor  int64 // highest change id when the listener first connected
	ring   [seenIDs]int64
	next   int
	seen   map[int64]struct{}
}

func (st *listenState) see(id int64) bool {
	if _, ok := st.seen[id]; ok {
		return false
	}
	if old := st.ring[st.next]; old != 0 {
		delete(st.seen, old)
	}
	st.ring[st.next] = id
	st.next = (st.next + 1) % seenIDs
	st.seen[id] = struct{}{}
	st.lastID = max(st.lastID, id)
	return true
}

func (s *Store) listenLoop() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	st := &listenState{lastID: -1, seen: make(map[int64]struct{}, seenIDs)}
	backoff := minBackoff
	for {
		connected, err := s.listenConn(ctx, st)
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = minBackoff
			s.log.Warn("psk store: change listener lost its connection; reconnecting", zap.Error(sanitize(err)))
		} else {
			s.log.Debug("psk store: change listener cannot connect", zap.Error(sanitize(err)), zap.Duration("backoff", backoff))
		}
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// listenConn runs one listener connection until it fails or ctx is done;
// connected reports whether it got as far as listening.
func (s *Store) listenConn(ctx context.Context, st *listenState) (connected bool, err error) {
	c, err := pgx.ConnectConfig(ctx, s.listen)
	if err != nil {
		return false, err
	}
	defer closeConn(c)
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	if _, err := c.Exec(qctx, "LISTEN "+Channel); err != nil {
		return false, err
	}
	if st.lastID < 0 {
		// First connection: report what commits from now on.
		if err := c.QueryRow(qctx, `SELECT coalesce(max(id), 0) FROM psk_change_log`).Scan(&st.lastID); err != nil {
			return false, err
		}
		st.floor = st.lastID
		// From here on every revocation reaches this replica (R10).
		s.log.Info("psk store: change listener connected")
	} else {
		// LISTEN is in place, so nothing committed from now on is missed:
		// replay what was committed while disconnected. Ids are drawn when
		// a change is written, not when it commits, so the replay also
		// looks at the ids just below the last one seen; changes already
		// reported are skipped.
		from := max(st.floor, st.lastID-seenIDs)
		n, err := s.fetch(qctx, c, `SELECT id, kind, identity FROM psk_change_log WHERE id > $1 ORDER BY id`, st, from)
		if err != nil {
			return false, err
		}
		s.log.Info("psk store: change listener reconnected", zap.Int("replayed", n))
	}
	cancel()
	s.readyOnce.Do(func() { close(s.listenReady) })

	for {
		wctx, cancel := context.WithTimeout(ctx, s.pollEvery)
		note, err := c.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			if pgconn.Timeout(err) && !c.IsClosed() {
				pctx, cancel := context.WithTimeout(ctx, s.pollEvery)
				err = c.Ping(pctx)
				cancel()
				if err == nil {
					continue
				}
			}
			return true, err
		}
		if note.Channel != Channel {
			continue
		}
		if _, err := strconv.ParseUint(note.Payload, 10, 64); err != nil {
			s.log.Debug("psk store: ignoring a foreign notification", zap.String("channel", note.Channel))
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, queryTimeout)
		_, err = s.fetch(qctx, c, `SELECT id, kind, identity FROM psk_change_log WHERE xid = $1::text::xid8 ORDER BY id`, st, note.Payload)
		cancel()
		if err != nil {
			return true, err
		}
	}
}

// fetch reads changes with query and reports those not seen yet; it
// returns how many it reported.
func (s *Store) fetch(ctx context.Context, c *pgx.Conn, query string, st *listenState, arg any) (int, error) {
	rows, err := c.Query(ctx, query, arg)
	if err != nil {
		return 0, err
	}
	var changes []pskstore.Change
	var (
		id       int64
		kind     string
		identity []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &kind, &identity}, func() error {
		if !st.see(id) {
			return nil
		}
		var k pskstore.ChangeKind
		switch kind {
		case "added":
			k = pskstore.Added
		case "rotated":
			k = pskstore.Rotated
		case "revoked":
			k = pskstore.Revoked
		default:
			return nil
		}
		changes = append(changes, pskstore.Change{Kind: k, Identity: identity})
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.changes.Notify(changes...)
	return len(changes), nil
}
