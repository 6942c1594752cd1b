// Package postgres is a pskstore.Store kept in PostgreSQL, shared by every
// replica of the gateway. It owns the schema (embedded migrations, applied
// by Open), the admin operations (Put, Rotate, Delete, PutMany, Keys,
// Count) with the RFC 9257 policy of package pskstore on every write, and
// the change feed: triggers record each change and NOTIFY channel
// psk_changes, and every replica's Watch reports it (R10).
//
// Keys are encrypted at rest with package sealed (AES-256-GCM under a
// key-encryption key given with WithKEK and never stored in the database,
// the identity as associated data), so a dump or backup of the database
// alone reveals no PSK (R9). Without a KEK keys are stored in plaintext.
// Rekey re-seals every key under a new KEK in one transaction.
//
// Lookups are bounded by WithLookupTimeout. When PostgreSQL cannot
// answer, Lookup fails fast with an error wrapping pskstore.ErrUnavailable
// (the gateway answers it like an unknown identity); sessions already
// established are not affected, since they never look up again. The store
// recovers on its own: broken connections of its pool (pgxpool) are
// replaced, and while the database is down only one lookup at a time
// probes it, the others fail at once.
//
// It does not own the key file format, the session table nor the choice of
// backend: cmd/gateway builds a Store from configuration.
package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

var (
	_ pskstore.Store    = (*Store)(nil)
	_ pskstore.Watcher  = (*Store)(nil)
	_ pskstore.Lister   = (*Store)(nil)
	_ pskstore.Putter   = (*Store)(nil)
	_ pskstore.Deleter  = (*Store)(nil)
	_ pskstore.Rotator  = (*Store)(nil)
	_ pskstore.Replacer = (*Store)(nil)
	_ sealed.Rekeyer    = (*Store)(nil)
)

// Defaults of the options.
const (
	DefaultLookupTimeout = 500 * time.Millisecond
	DefaultMaxConns      = 8
)

// MaxIdentityLen is the longest identity this backend stores, in bytes: an
// identity is the primary key, and a btree index entry holds at most about
// 2.7 KB. Open refuses a Policy.MaxIdentityLen above it.
const MaxIdentityLen = 2048

// Option configures Open.
type Option func(*options)

type options struct {
	lookupTimeout  time.Duration
	policy         pskstore.Options
	fingerprintKey []byte
	kek            *sealed.KEK
	plaintext      bool
	maxConns       int
	logger         *zap.Logger
}

// WithPolicy sets the policy every written key is checked against
// (R1–R8). Its MaxIdentityLen may not exceed MaxIdentityLen; its
// Fingerprinter is ignored: the store fingerprints with its own secret
// (WithFingerprintKey). The zero value is the default.
func WithPolicy(p pskstore.Options) Option { return func(o *options) { o.policy = p } }

// WithLogger sets the logger of connection-state changes (database lost
// and back, listener reconnecting). Nil means no logging, the default.
// Identities are logged only as tags (R9), keys never.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.logger = l } }

// WithKEK seals keys at rest under kek (package sealed): every write stores
// the key sealed under it, and reads open it. Nil, the default, means no
// KEK: keys are written in plaintext and a sealed key is refused
// (ErrNoKEK). With a KEK a plaintext key is refused (ErrPlaintextKey)
// unless WithInsecurePlaintextKeys; a key sealed under another KEK is
// refused naming both KEK ids (sealed.ErrWrongKEK). Open checks every
// stored key against these rules (by the KEK id kept with each key,
// without decrypting) and fails on the first key that breaks one, naming
// it by tag, so a gateway given the wrong KEK does not start.
func WithKEK(kek *sealed.KEK) Option { return func(o *options) { o.kek = kek } }

// WithInsecurePlaintextKeys(true) accepts plaintext keys although a KEK is
// set, during a migration to sealed keys (see Rekey); writes are sealed
// all the same. Without a KEK it has no effect. Default false.
func WithInsecurePlaintextKeys(allow bool) Option { return func(o *options) { o.plaintext = allow } }

// WithLookupTimeout bounds one Lookup, connecting included. Zero or
// negative means DefaultLookupTimeout (500ms).
func WithLookupTimeout(d time.Duration) Option { return func(o *options) { o.lookupTimeout = d } }

// WithMaxConns sets the most database connections the store opens, besides
// the one its change listener holds. Zero or negative means
// DefaultMaxConns (8).
func WithMaxConns(n int) Option { return func(o *options) { o.maxConns = n } }

// WithFingerprintKey keys the fingerprints that make key material unique
// (R4). Without it the store uses the secret kept in the database, drawn
// from crypto/rand by the first Open, so every replica shares it. A store
// created with a fingerprint key must always be opened with it: Open
// refuses another one (a check value is kept, not the key).
func WithFingerprintKey(secret []byte) Option { return func(o *options) { o.fingerprintKey = secret } }

// Store is a PostgreSQL-backed pskstore.Store, pskstore.Watcher and key
// administration API. It is safe for concurrent use. Close releases it.
type Store struct {
	pool     *pgxpool.Pool
	listen   *pgx.ConnConfig // the listener's connection settings
	timeout  time.Duration
	policy   pskstore.Options
	fp       *pskstore.Fingerprinter
	tagKey   []byte // psk_store.tag_key
	log      *zap.Logger
	location string // where the store is, for messages: no password

	kek      atomic.Pointer[sealed.KEK] // nil: plaintext; swapped by Rekey
	insecure bool                       // plaintext keys accepted although kek is set
	closing  atomic.Bool                // set by Close

	down    atomic.Bool // the last lookup could not reach the database
	probing atomic.Bool // a lookup is probing a database that was down

	changes     pskstore.Notifier
	pollEvery   time.Duration // listener's ping interval when idle
	listenReady chan struct{} // closed once the listener first LISTENs
	readyOnce   sync.Once
	done        chan struct{} // closed by Close
	wg          sync.WaitGroup

	listenMu  sync.Mutex
	listening bool // the listener goroutine was started
	closed    bool
}

// Open connects to the database at dsn, applies the migrations it has not
// seen (serialized between replicas by an advisory lock) and loads or
// creates the fingerprint secret and the identity-tag key. The ctx bounds
// only Open itself. If the database cannot be reached the error wraps
// pskstore.ErrUnavailable.
//
// dsn locates the database, as a URL
// ("postgres://user@127.0.0.1:5432/db?sslmode=disable") or key=value pairs
// ("host=/run/postgresql dbname=gateway"); see pgx.ParseConfig. Run-time
// parameters such as search_path may be given in it; the tables are
// created in the first schema of the search path. Pool parameters
// (pool_max_conns, …) are ignored: WithMaxConns sizes the pool. The DSN
// may hold a password: errors never show it.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if dsn == "" {
		return nil, errors.New("postgres: open: empty DSN")
	}
	if o.policy.MaxIdentityLen > MaxIdentityLen {
		return nil, fmt.Errorf("postgres: open: policy MaxIdentityLen %d above the %d bytes this backend stores",
			o.policy.MaxIdentityLen, MaxIdentityLen)
	}
	poolCfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors may quote the DSN, password included: drop them.
		return nil, errors.New("postgres: open: invalid DSN")
	}
	connCfg := poolCfg.ConnConfig
	if connCfg.ConnectTimeout == 0 {
		connCfg.ConnectTimeout = defaultConnectTimeout
	}
	app := connCfg.RuntimeParams["application_name"]
	if app == "" {
		app = "gateway pskstore"
		connCfg.RuntimeParams["application_name"] = app
	}
	listenCfg := connCfg.Copy()
	listenCfg.RuntimeParams["application_name"] = app + " listener"

	timeout := orDefault(o.lookupTimeout, DefaultLookupTimeout)
	p, err := newPool(poolCfg, orDefault(o.maxConns, DefaultMaxConns), timeout)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	s := &Store{
		pool:        p,
		listen:      listenCfg,
		timeout:     timeout,
		policy:      o.policy,
		log:         o.logger,
		insecure:    o.plaintext,
		pollEvery:   defaultPollEvery,
		listenReady: make(chan struct{}),
		done:        make(chan struct{}),
	}
	s.kek.Store(o.kek)
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.log = s.log.With(zap.String("store", "postgres"))
	var schema string
	err = s.withConn(ctx, func(c *pgx.Conn) error {
		var err error
		if schema, err = migrate(ctx, c, s.log); err != nil {
			return err
		}
		secret, err := fingerprintKey(ctx, c, o.fingerprintKey)
		if err != nil {
			return err
		}
		s.fp = pskstore.NewFingerprinter(secret)
		if s.tagKey, err = tagKey(ctx, c); err != nil {
			return err
		}
		return s.checkSealing(ctx, c)
	})
	if err != nil {
		s.pool.Close()
		var ce *pgconn.ConnectError
		var ke *KeyError
		switch {
		case errors.As(err, &ce):
			return nil, fmt.Errorf("postgres: open: %w: %w", pskstore.ErrUnavailable, sanitize(err))
		case errors.As(err, &ke):
			return nil, fmt.Errorf("postgres: open: %w", err)
		}
		return nil, fmt.Errorf("postgres: open: %w", sanitize(err))
	}
	s.location = location(connCfg, schema)
	s.policy.Fingerprinter = s.fp
	if s.policy.Tagger == nil {
		s.policy.Tagger = pskstore.NewTagger(s.tagKey)
	}
	return s, nil
}

// location describes where the store is, without credentials:
// "127.0.0.1:5432/gateway schema public", "unix:/run/postgresql:5432/…".
func location(c *pgx.ConnConfig, schema string) string {
	host := net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))
	if strings.HasPrefix(c.Host, "/") {
		host = "unix:" + c.Host + ":" + strconv.Itoa(int(c.Port))
	}
	return fmt.Sprintf("%s/%s schema %s", host, c.Database, schema)
}

// TagKey returns the secret kept in the database that keys identity tags
// (psk_store.tag_key, drawn by the first Open): a tagger keyed with it
// tags identities alike on every replica and in every tool. The store's
// own messages use it unless WithPolicy gives a Tagger.
func (s *Store) TagKey() []byte { return bytes.Clone(s.tagKey) }

// Location says where the store is, for messages to the operator:
// host, port, database and schema; never credentials.
func (s *Store) Location() string { return s.location }

// Close stops the change listener and closes the connections, after the
// operations in progress hand theirs back, waiting at most 2s for them;
// watch channels receive nothing more and still close when their context
// is done. Methods called after Close fail with an error wrapping ErrClosed.
// It is idempotent.
func (s *Store) Close() error {
	s.listenMu.Lock()
	if s.closed {
		s.listenMu.Unlock()
		return nil
	}
	s.closed = true
	s.closing.Store(true)
	s.listenMu.Unlock()
	close(s.done)
	s.wg.Wait()
	// pgxpool's Close waits for every connection to be cleaned up, which
	// for a connection broken by an unreachable server takes up to 15s:
	// wait a little, then let it finish on its own, so a shutdown is not
	// held up by a database that went away.
	closed := make(chan struct{})
	go func() {
		s.pool.Close()
		close(closed)
	}()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-closed:
	case <-t.C:
		s.log.Warn("psk store: connections still closing", zap.Duration("after", closeWait))
	}
	return nil
}

// closeWait bounds how long Close waits for the pool's connections.
const closeWait = 2 * time.Second

func (s *Store) isClosed() bool { return s.closing.Load() }

// ErrClosed is returned (wrapped) by every method after Close.
var ErrClosed = errors.New("postgres: store closed")

// tag is the identity as it may appear in errors and logs (R9).
func (s *Store) tag(identity []byte) string { return s.policy.Tagger.Tag(identity) }

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
