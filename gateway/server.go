package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-gateway/gateway/lwm2m"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/statestore"
	"github.com/pion/logging"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Server is the gateway: listeners, handshakes, sessions, forwarding.
// Create it with New, bind with Listen (or let Serve do it), run with
// Serve, stop with Shutdown or Close. Safe for concurrent use.
//
// Goroutines, whatever the number of devices: one event loop (poller: every
// listener's socket and every upstream socket), one sweeper, one
// registration writer, and one per
// handshake in progress (bounded by Config.MaxHandshakes) plus pion's own
// for that handshake. On the pion data plane each session keeps its pion
// Conn's goroutines and a reader.
type Server struct {
	cfg         Config
	log         *zap.Logger
	sampled     *zap.Logger // for events an attacker can trigger
	pionLog     logging.LoggerFactory
	table       *table
	stats       counters
	inspector   lwm2m.Inspector
	admission   *admission
	regs        *registry
	lookup      prometheus.Histogram
	storeErrors prometheus.Counter
	dummySecret [32]byte      // keys for unknown identities (psk.go)
	keyChanges  atomic.Uint64 // revocations and rotations seen (R10, establish.go)

	cluster *cluster // nil: a single gateway

	mu        sync.Mutex
	listeners []*listener
	link      *net.UDPConn              // the replicas' link (cluster.go)
	backends  map[string]netip.AddrPort // resolved at Listen
	pollers   []*poller                 // the event loops (Config.EventLoops)
	loopReads []loopCounter             // datagrams each event loop read from the listeners (metrics)
	started   bool
	serveCtx  func() context.Context // Serve's context: handshakes and lookups end with it
	cancel    context.CancelFunc
	stop      chan struct{} // ends the sweeper and the registration writer

	// Snapshots (checkpoint.go).
	snapMu sync.Mutex
	// restoreLoadFailed: the snapshots could not be loaded at start; the
	// checkpointer tries again (checkpoint.go restore).
	restoreLoadFailed atomic.Bool
	closedIDs         [][]byte              // snapshots to delete at the next checkpoint
	pendingRestores   []statestore.Snapshot // waiting for the key store
	urge              chan struct{}
	handingOff        atomic.Bool

	closing atomic.Bool
	ready   atomic.Bool    // Serve has started (Ready)
	wg      sync.WaitGroup // handshake goroutines and pion-plane readers
	readers sync.WaitGroup // listener read loops where there is no epoll (poller_other.go)
	bg      sync.WaitGroup // poller, sweeper, registration writer, checkpointer
	done    chan struct{}
	once    sync.Once
}

// New validates cfg, applies defaults and returns a Server. It does no I/O.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With(zap.String("component", "gateway"))
	// At most 5 identical messages a second, then 1 in 100: a flood of bad
	// handshakes must not become a flood of log lines.
	sampled := log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, 5, 100)
	}))
	srv := &Server{
		cfg:         cfg,
		log:         log,
		sampled:     sampled,
		pionLog:     pionLogger{log: cfg.Logger.With(zap.String("component", "dtls"))},
		table:       newTable(),
		regs:        newRegistry(cfg.Registrations, log, cfg.RegistrationGrace),
		lookup:      newLookupHistogram(),
		storeErrors: newStoreErrors(),
		stop:        make(chan struct{}),
		urge:        make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	if _, err := rand.Read(srv.dummySecret[:]); err != nil {
		return nil, fmt.Errorf("gateway: random: %w", err)
	}
	srv.stats.init(cfg.Backends)
	srv.admission = newAdmission(&srv.cfg)
	if cfg.Cluster != nil {
		srv.cluster = newCluster(srv)
	}
	return srv, nil
}

// tag is the keyed tag logs carry for an identity (R9).
func (srv *Server) tag(identity []byte) string { return srv.cfg.IdentityTag(identity) }

// Listen binds every configured listener and resolves the backends. Serve
// calls it when needed; call it first to learn the bound addresses (Addrs)
// before serving.
func (srv *Server) Listen() error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closing.Load() {
		return ErrServerClosed
	}
	if len(srv.listeners) > 0 {
		return nil
	}
	backends := make(map[string]netip.AddrPort, len(srv.cfg.Backends))
	for name, addr := range srv.cfg.Backends {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return fmt.Errorf("gateway: backend %q: %w", name, err)
		}
		ap := ua.AddrPort()
		backends[name] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	pollers := make([]*poller, 0, srv.cfg.EventLoops)
	fail := func(err error) error {
		srv.closeListenersLocked()
		srv.listeners = nil
		for _, p := range pollers {
			p.release()
		}
		return err
	}
	for k := range srv.cfg.EventLoops {
		p, err := newPoller(srv, k)
		if err != nil {
			return fail(err)
		}
		pollers = append(pollers, p)
	}
	srv.loopReads = make([]loopCounter, srv.cfg.EventLoops)
	for i, lc := range srv.cfg.Listeners {
		addr, err := net.ResolveUDPAddr("udp", lc.Address)
		if err != nil {
			return fail(fmt.Errorf("gateway: listener %q: %w", lc.Address, err))
		}
		l := &listener{srv: srv, index: i, missingSNI: lc.MissingSNI, backend: lc.Backend}
		srv.listeners = append(srv.listeners, l)
		// One socket per event loop, all bound to the listener's address
		// (SO_REUSEPORT when there are several): the first takes the port
		// (which may be 0: any), the others join it.
		reuse := srv.cfg.EventLoops > 1
		for range srv.cfg.EventLoops {
			pc, err := listenUDP(addr, 4<<20, reuse)
			if err != nil {
				return fail(fmt.Errorf("gateway: listener %q: %w", lc.Address, err))
			}
			l.socks = append(l.socks, pc)
			l.reads = append(l.reads, l.readerFor(len(l.reads)))
			addr = pc.LocalAddr().(*net.UDPAddr)
		}
		l.pc = l.socks[0]
	}
	if srv.cluster != nil {
		la, err := net.ResolveUDPAddr("udp", srv.cfg.LinkAddress)
		if err == nil {
			srv.link, err = net.ListenUDP("udp", la)
		}
		if err != nil {
			return fail(fmt.Errorf("gateway: replica link %q: %w", srv.cfg.LinkAddress, err))
		}
		srv.cluster.link = srv.link
	}
	srv.backends, srv.pollers = backends, pollers
	for _, p := range pollers {
		srv.bg.Add(1)
		go func() {
			defer srv.bg.Done()
			p.run()
		}()
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
// until ctx ends (it then closes the server and returns ctx.Err()). It
// loads the saved registrations first; a registration store that fails is
// logged and the gateway serves without them.
func (srv *Server) Serve(ctx context.Context) error {
	if err := srv.Listen(); err != nil {
		return err
	}
	srv.mu.Lock()
	if srv.started {
		srv.mu.Unlock()
		return errors.New("gateway: Serve called twice")
	}
	srv.started = true
	sctx, cancel := context.WithCancel(ctx)
	srv.serveCtx = func() context.Context { return sctx }
	srv.cancel = cancel
	srv.mu.Unlock()
	defer cancel()

	lctx, lcancel := context.WithTimeout(sctx, registryLoadTimeout)
	if err := srv.regs.load(lctx); err != nil {
		srv.log.Error("cannot load saved registrations; devices that re-handshake will re-register", zap.Error(err))
	}
	lcancel()
	if c := srv.cluster; c != nil {
		// The lease first: restored sessions seal only under it, and only
		// one process serves a replica id's sessions.
		jctx, jcancel := context.WithTimeout(sctx, 2*c.lease)
		c.join(jctx)
		jcancel()
		srv.bg.Add(2)
		go func() {
			defer srv.bg.Done()
			c.run(srv.stop)
		}()
		go func() {
			defer srv.bg.Done()
			c.serveLink()
		}()
	}
	if srv.cfg.Sessions != nil {
		// Before any read loop: a device's first datagram after the
		// restart must find its session.
		rctx, rcancel := context.WithTimeout(sctx, restoreTimeout)
		srv.restore(rctx)
		rcancel()
		srv.bg.Add(1)
		go func() {
			defer srv.bg.Done()
			srv.checkpointer(srv.stop)
		}()
	}
	srv.bg.Add(2)
	go func() {
		defer srv.bg.Done()
		srv.sweep(srv.stop)
	}()
	go func() {
		defer srv.bg.Done()
		srv.regs.run(srv.stop)
	}()
	srv.mu.Lock()
	for _, l := range srv.listeners {
		for k, p := range srv.pollers {
			if err := p.watch(l, k); err != nil {
				srv.mu.Unlock()
				_ = srv.Close()
				return err
			}
		}
		srv.log.Info("listening", zap.Stringer("addr", l.pc.LocalAddr()), zap.Stringer("data_plane", srv.cfg.DataPlane))
	}
	srv.mu.Unlock()
	// Start-up is written before the gateway reports ready, whatever the
	// log buffering (log.flush_interval): an operator or a supervisor
	// waits for it.
	_ = srv.log.Sync()
	srv.ready.Store(true)
	if w, ok := srv.cfg.Store.(pskstore.Watcher); ok {
		go srv.watchStore(sctx, w)
	}
	select {
	case <-ctx.Done():
		_ = srv.Close()
		return ctx.Err()
	case <-srv.done:
		return ErrServerClosed
	}
}

// registryLoadTimeout bounds loading the saved registrations at Serve.
const registryLoadTimeout = 10 * time.Second

// restoreTimeout bounds restoring the sessions at Serve.
const restoreTimeout = 2 * time.Minute

// serving returns Serve's context; before Serve, one that never ends.
func (srv *Server) serving() context.Context {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.serveCtx == nil {
		return context.Background()
	}
	return srv.serveCtx()
}

// watchStore closes the sessions of revoked and rotated identities (R10).
func (srv *Server) watchStore(ctx context.Context, w pskstore.Watcher) {
	changes, err := w.Watch(ctx)
	if err != nil {
		srv.log.Error("cannot watch the key store; revocations need a restart", zap.Error(err))
		return
	}
	for ch := range changes {
		if ch.Kind != pskstore.Revoked && ch.Kind != pskstore.Rotated {
			continue
		}
		n := srv.CloseIdentity(ch.Identity, "identity "+ch.Kind.String())
		srv.log.Info("key changed", zap.String("identity_tag", srv.tag(ch.Identity)),
			zap.Stringer("change", ch.Kind), zap.Int("sessions_closed", n))
	}
}

// CloseIdentity closes every live session of identity and returns how many.
// A handshake of the identity that completes meanwhile re-checks its key
// before it serves (establish.go), so a revocation is never missed.
func (srv *Server) CloseIdentity(identity []byte, reason string) int {
	srv.keyChanges.Add(1)
	ss := srv.table.withIdentity(identity)
	for _, s := range ss {
		s.close(reason, true)
	}
	return len(ss)
}

// Shutdown stops accepting new handshakes, closes every session with
// close_notify and its upstream sockets, waits until the handshakes and
// session goroutines have ended or ctx ends, then closes the server. It is
// idempotent.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.closing.Store(true)
	for _, s := range srv.table.snapshot() {
		s.close("shutdown", true)
	}
	if srv.cfg.Sessions != nil {
		// The sessions ended: their snapshots must not be restored.
		if _, err := srv.checkpoint(ctx, false); err != nil {
			srv.log.Warn("cannot delete the snapshots of closed sessions", zap.Error(err))
		}
	}
	srv.mu.Lock()
	if srv.cancel != nil {
		srv.cancel() // ends the handshakes in progress
	}
	srv.mu.Unlock()
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

// Close stops everything at once: listeners, handshakes, sessions (with
// close_notify), upstream sockets, background goroutines.
func (srv *Server) Close() error {
	srv.closing.Store(true)
	srv.once.Do(func() {
		srv.mu.Lock()
		if srv.cancel != nil {
			srv.cancel()
		}
		srv.mu.Unlock()
		for _, h := range srv.table.pendingHandshakes() {
			h.evictQuietly()
		}
		for _, s := range srv.table.snapshot() {
			s.close("server closed", true)
		}
		srv.mu.Lock()
		srv.closeListenersLocked()
		pollers := srv.pollers
		srv.mu.Unlock()
		srv.readers.Wait()
		close(srv.stop)
		for _, p := range pollers {
			p.close()
		}
		srv.bg.Wait()
		close(srv.done)
	})
	return nil
}

func (srv *Server) closeListenersLocked() {
	for _, l := range srv.listeners {
		for _, pc := range l.socks {
			_ = pc.Close()
		}
	}
	if srv.link != nil {
		_ = srv.link.Close()
	}
}

// linkAddr is where other replicas reach this one's link.
func (srv *Server) linkAddr() string {
	if srv.cfg.LinkAdvertise != "" {
		return srv.cfg.LinkAdvertise
	}
	if srv.link != nil {
		return srv.link.LocalAddr().String()
	}
	return ""
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
