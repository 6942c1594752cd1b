package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pool is a small connection pool of *pgx.Conn. pgxpool is not used: it
// needs github.com/jackc/puddle/v2, which go.sum does not carry. withConn
// has the shape of pgxpool.Pool.AcquireFunc, so switching is mechanical.
//
// A connection is used by one goroutine at a time. Broken connections are
// dropped when they are handed back (pgx closes a connection on any I/O or
// fatal server error); idle ones are dropped after maxIdle.
type pool struct {
	cfg   *pgx.ConnConfig
	slots chan struct{} // one token per connection open or being opened

	mu     sync.Mutex
	idle   []idleConn // most recently used last
	closed bool
}

type idleConn struct {
	c     *pgx.Conn
	since time.Time
}

const (
	// maxIdle is how long an unused connection is kept: NATs and
	// firewalls drop idle TCP flows silently.
	maxIdle = 5 * time.Minute
	// pingAfter is how long a connection may sit idle before a caller that
	// asks for a checked connection (a write, which is not retried) pings
	// it first, so a connection the server dropped is not used.
	pingAfter = time.Second
)

func newPool(cfg *pgx.ConnConfig, maxConns int) *pool {
	return &pool{cfg: cfg, slots: make(chan struct{}, maxConns)}
}

// withConn runs f on a connection, waiting for a free slot until ctx is
// done. With checked, an idle connection is pinged before use.
func (p *pool) withConn(ctx context.Context, checked bool, f func(*pgx.Conn) error) error {
	c, err := p.acquire(ctx, checked)
	if err != nil {
		return err
	}
	defer p.release(c)
	return f(c)
}

func (p *pool) acquire(ctx context.Context, checked bool) (*pgx.Conn, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			<-p.slots
			return nil, ErrClosed
		}
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		ic := p.idle[n-1]
		p.idle[n-1] = idleConn{}
		p.idle = p.idle[:n-1]
		p.mu.Unlock()

		idle := time.Since(ic.since)
		switch {
		case ic.c.IsClosed() || idle > maxIdle:
		case checked && idle > pingAfter && ic.c.Ping(ctx) != nil:
			if ctx.Err() != nil {
				closeConn(ic.c)
				<-p.slots
				return nil, ctx.Err()
			}
		default:
			return ic.c, nil
		}
		closeConn(ic.c)
	}
	c, err := pgx.ConnectConfig(ctx, p.cfg)
	if err != nil {
		<-p.slots
		return nil, err
	}
	return c, nil
}

// release hands c back, or closes it if it is broken or inside a
// transaction left open by a failure.
func (p *pool) release(c *pgx.Conn) {
	defer func() { <-p.slots }()
	if c.IsClosed() || c.PgConn().TxStatus() != 'I' {
		closeConn(c)
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		closeConn(c)
		return
	}
	p.idle = append(p.idle, idleConn{c: c, since: time.Now()})
	p.mu.Unlock()
}

// purgeIdle closes the idle connections, after one was found broken: a
// server restart or pg_terminate_backend breaks them all at once.
func (p *pool) purgeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ic := range idle {
		closeConn(ic.c)
	}
}

// close closes the idle connections; connections in use are closed when
// they are released.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ic := range idle {
		closeConn(ic.c)
	}
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
