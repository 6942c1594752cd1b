package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-gateway/gateway/lwm2m"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/logging"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Server is the gateway: listeners, sessions, forwarding. Create it with New,
// bind with Listen (or let Serve do it), run with Serve, stop with Shutdown
// or Close. Safe for concurrent use.
type Server struct {
	cfg         Config
	log         *zap.Logger
	warn        *zap.Logger // sampled: for events an attacker can trigger
	pionLog     logging.LoggerFactory
	table       *table
	stats       counters
	inspector   lwm2m.Inspector
	admission   *admission
	lookup      prometheus.Histogram
	storeErrors prometheus.Counter

	ctx    context.Context // ends every session on Close
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners []*listener
	serving   bool

	closing atomic.Bool
	wg      sync.WaitGroup // session goroutines
	lwg     sync.WaitGroup // listener read loops
	done    chan struct{}
	once    sync.Once
}

// New validates cfg, applies defaults and returns a Server. It does no I/O.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := cfg.Logger.With(zap.String("component", "gateway"))
	// At most 5 identical messages a second, then 1 in 100: a flood of bad
	// handshakes must not become a flood of log lines.
	warn := log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, 5, 100)
	}))
	srv := &Server{
		cfg:         cfg,
		log:         log,
		warn:        warn,
		pionLog:     pionLogger{log: cfg.Logger.With(zap.String("component", "dtls"))},
		table:       newTable(),
		lookup:      newLookupHistogram(),
		storeErrors: newStoreErrors(),
		ctx:         ctx,
		cancel:      cancel,
		done:        make(chan struct{}),
	}
	srv.stats.init(cfg.Backends)
	srv.admission = newAdmission(&srv.cfg)
	return srv, nil
}

// Listen binds every configured listener. Serve calls it when needed; call
// it first to learn the bound addresses (Addrs) before serving.
func (srv *Server) Listen() error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closing.Load() {
		return ErrServerClosed
	}
	if len(srv.listeners) > 0 {
		return nil
	}
	for _, lc := range srv.cfg.Listeners {
		addr, err := net.ResolveUDPAddr("udp", lc.Address)
		if err != nil {
			srv.closeListenersLocked()
			return fmt.Errorf("gateway: listener %q: %w", lc.Address, err)
		}
		pc, err := net.ListenUDP("udp", addr)
		if err != nil {
			srv.closeListenersLocked()
			return fmt.Errorf("gateway: listener %q: %w", lc.Address, err)
		}
		// A large receive buffer absorbs bursts (reconnect storms, floods)
		// while the read loop catches up; the kernel caps it at rmem_max.
		_ = pc.SetReadBuffer(4 << 20)
		srv.listeners = append(srv.listeners, newListener(srv, pc, lc))
	}
	return nil
}

// Addrs returns the bound listener addresses (after Listen).
func (srv *Server) Addrs() []net.Addr {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	out := make([]net.Addr, 0, len(srv.listeners))
	for _, l := range srv.listeners {
		out = append(out, l.pc.LocalAddr())
	}
	return out
}

// Serve serves until Shutdown or Close (it then returns ErrServerClosed) or
// until ctx ends (it then closes the server and returns ctx.Err()).
func (srv *Server) Serve(ctx context.Context) error {
	if err := srv.Listen(); err != nil {
		return err
	}
	srv.mu.Lock()
	if srv.serving {
		srv.mu.Unlock()
		return errors.New("gateway: Serve called twice")
	}
	srv.serving = true
	for _, l := range srv.listeners {
		srv.lwg.Add(1)
		go func() {
			defer srv.lwg.Done()
			if err := l.serve(); err != nil {
				srv.log.Error("listener stopped", zap.Error(err))
			}
		}()
		srv.log.Info("listening", zap.Stringer("addr", l.pc.LocalAddr()))
	}
	srv.mu.Unlock()
	if w, ok := srv.cfg.Store.(pskstore.Watcher); ok {
		go srv.watchStore(w)
	}
	select {
	case <-ctx.Done():
		_ = srv.Close()
		return ctx.Err()
	case <-srv.done:
		return ErrServerClosed
	}
}

// watchStore closes the sessions of revoked and rotated identities (R10).
func (srv *Server) watchStore(w pskstore.Watcher) {
	changes, err := w.Watch(srv.ctx)
	if err != nil {
		srv.log.Error("cannot watch the key store; revocations need a restart", zap.Error(err))
		return
	}
	for ch := range changes {
		if ch.Kind != pskstore.Revoked && ch.Kind != pskstore.Rotated {
			continue
		}
		n := srv.CloseIdentity(ch.Identity, "identity "+ch.Kind.String())
		srv.log.Info("key changed", zap.String("identity_tag", srv.cfg.IdentityTag(ch.Identity)),
			zap.Stringer("change", ch.Kind), zap.Int("sessions_closed", n))
	}
}

// CloseIdentity closes every live session of identity and returns how many.
func (srv *Server) CloseIdentity(identity []byte, reason string) int {
	ss := srv.table.withIdentity(identity)
	for _, s := range ss {
		s.close(reason)
	}
	return len(ss)
}

// Shutdown stops accepting new sessions, closes every session with
// close_notify (parked sessions have no Conn and get none) and its upstream
// socket, and waits for them until ctx ends.
// It is idempotent.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.closing.Store(true)
	for _, s := range srv.table.snapshot() {
		s.close("shutdown")
	}
	idle := make(chan struct{})
	go func() {
		srv.wg.Wait()
		close(idle)
	}()
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = ctx.Err()
	}
	_ = srv.Close()
	return err
}

// Close stops everything at once: listeners, sessions, upstream sockets.
func (srv *Server) Close() error {
	srv.closing.Store(true)
	srv.once.Do(func() {
		srv.cancel()
		for _, s := range srv.table.snapshot() {
			s.close("server closed")
		}
		srv.mu.Lock()
		srv.closeListenersLocked()
		srv.mu.Unlock()
		srv.lwg.Wait()
		close(srv.done)
	})
	return nil
}

func (srv *Server) closeListenersLocked() {
	for _, l := range srv.listeners {
		_ = l.pc.Close()
	}
}

// pionLogger routes pion's logs into zap. pion's messages are protocol
// detail, so they all go to Debug; Trace is dropped.
type pionLogger struct{ log *zap.Logger }

func (p pionLogger) NewLogger(scope string) logging.LeveledLogger {
	return pionScoped{p.log.Sugar().With("scope", scope)}
}

type pionScoped struct{ l *zap.SugaredLogger }

func (p pionScoped) Trace(string)              {}
func (p pionScoped) Tracef(string, ...any)     {}
func (p pionScoped) Debug(m string)            { p.l.Debug(m) }
func (p pionScoped) Debugf(f string, a ...any) { p.l.Debugf(f, a...) }
func (p pionScoped) Info(m string)             { p.l.Debug(m) }
func (p pionScoped) Infof(f string, a ...any)  { p.l.Debugf(f, a...) }
func (p pionScoped) Warn(m string)             { p.l.Debug(m) }
func (p pionScoped) Warnf(f string, a ...any)  { p.l.Debugf(f, a...) }
func (p pionScoped) Error(m string)            { p.l.Debug(m) }
func (p pionScoped) Errorf(f string, a ...any) { p.l.Debugf(f, a...) }
