package postgres

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"
)

// The store's connections come from a pgxpool.Pool, tuned for the
// handshake path; the change listener holds a dedicated *pgx.Conn of its
// own (watch.go), outside the pool.
//
// A connection is used by one goroutine at a time. pgxpool destroys a
// connection handed back broken or inside a transaction a failure left
// open; idle ones are closed after maxIdle. Before a write, a connection
// idle for more than pingAfter is pinged, so a connection the server
// dropped is not used (writes are not retried); lookups skip the ping and
// retry on another connection instead (lookup.go), which is cheaper on the
// handshake path.

const (
	// maxIdle is how long an unused connection is kept: NATs and
	// firewalls drop idle TCP flows silently.
	maxIdle = 5 * time.Minute
	// pingAfter is how long a connection may sit idle before a write pings
	// it first.
	pingAfter = time.Second
	// defaultConnectTimeout bounds a connection attempt of Open and the
	// admin operations when the DSN sets no connect_timeout.
	defaultConnectTimeout = 10 * time.Second
)

// lookupKey marks the context of a lookup's acquire: no ping (the lookup
// retries instead), and a new connection made for it gives up after the
// lookup timeout rather than defaultConnectTimeout. pgxpool keeps
// connecting after the acquiring caller gave up, so without the shorter
// timeout an unreachable database would fill the pool with attempts that
// outlive it by seconds, and delay recovery.
type lookupKey struct{}

// newPool builds (without connecting) the pool of the store from cfg, as
// pgxpool.ParseConfig returned it, overriding its pool settings.
func newPool(cfg *pgxpool.Config, maxConns int, lookupTimeout time.Duration) (*pgxpool.Pool, error) {
	cfg.MaxConns = int32(maxConns)
	cfg.MinConns, cfg.MinIdleConns = 0, 0
	cfg.MaxConnIdleTime = maxIdle
	cfg.ShouldPing = func(ctx context.Context, p pgxpool.ShouldPingParams) bool {
		return p.IdleDuration > pingAfter && ctx.Value(lookupKey{}) == nil
	}
	cfg.BeforeConnect = func(ctx context.Context, c *pgx.ConnConfig) error {
		if ctx.Value(lookupKey{}) != nil && (c.ConnectTimeout == 0 || c.ConnectTimeout > lookupTimeout) {
			c.ConnectTimeout = lookupTimeout
		}
		return nil
	}
	// The pool is built without I/O: Open's first acquire connects.
	return pgxpool.NewWithConfig(context.Background(), cfg)
}

// withConn runs f on a pooled connection, waiting for a free one until ctx
// is done. After Close it returns ErrClosed.
func (s *Store) withConn(ctx context.Context, f func(*pgx.Conn) error) error {
	if s.isClosed() {
		return ErrClosed
	}
	c, err := s.pool.Acquire(ctx)
	if errors.Is(err, puddle.ErrClosedPool) {
		return ErrClosed
	}
	if err != nil {
		return err
	}
	err = f(c.Conn())
	if c.Conn().IsClosed() {
		// pgx closed it on a fatal error and cleans up in the background,
		// sending a cancel request first: up to 15s when the server is
		// unreachable. Released, the connection would hold its slot of the
		// pool until then, and an outage could exhaust the pool and delay
		// the recovery; hijacked, the slot is free at once.
		_ = c.Hijack()
		return err
	}
	c.Release()
	return err
}

// closeConn closes c without waiting long for a server that may be gone.
func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

// connLost reports whether err means the connection or the server is gone
// (as opposed to an error of the statement), so a read may be retried on
// another connection.
func connLost(c *pgx.Conn, err error) bool {
	if c != nil && c.IsClosed() {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// 08: connection exception; 57P01-57P05: admin shutdown, crash
		// shutdown, cannot connect now, database dropped, idle timeout.
		return strings.HasPrefix(pe.Code, "08") || (strings.HasPrefix(pe.Code, "57P") && pe.Code != "57P04")
	}
	return pgconn.SafeToRetry(err)
}
