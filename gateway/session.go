package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-gateway/gateway/lwm2m"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/protocol/extension"
	"github.com/pion/dtls/v4/pkg/protocol/handshake"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// session is one DTLS association and its upstream socket. Its goroutine
// (run) owns the handshake and the device→backend direction; fromBackend owns
// the other direction. close may be called from anywhere, once it matters.
//
// An established session may be parked (park.go): its *dtls.Conn is
// exported to serialized state and dropped, and resumed on the next datagram
// either way. pc and conn therefore change over time: both are guarded by
// lmu, which also serialises park, resume and close.
type session struct {
	srv *Server
	l   *listener

	// lmu guards the lifecycle: pc, conn, parked, idle and the parked
	// transitions. Lock order: lmu before mu, bmu and table.mu; nothing
	// that holds one of those takes lmu.
	lmu    sync.Mutex
	pc     *sessionConn
	conn   *dtls.Conn
	parked []byte // serialized dtls.State while parked, nil while active

	// Guarded by srv.table.mu.
	routeAddr netip.AddrPort
	cids      [][]byte

	mu          sync.Mutex
	key         pskstore.Key // chosen by the PSK callback
	hasKey      bool
	tag         string
	pskOnly     bool        // DTLS 1.3 ServerHello without key_share: psk_ke
	failure     string      // why the handshake failed, for logs and counters
	ups         []*upstream // open backend sockets
	backend     string      // the identity's backend name, set once established
	established bool
	closed      bool

	// bmu serialises the LwM2M binding and the origin table between the
	// device's goroutine and the backends' goroutines.
	bmu     sync.Mutex
	binding *lwm2m.Binding // L1/L2 state, set once established
	origins origins        // which backend asked what, to route answers
	// registers limits Register and Bootstrap-Request per session.
	registers *rate.Limiter

	embryo     embryoState  // admission: datagrams seen before establishment
	lastActive atomic.Int64 // unix nanoseconds
	idle       *time.Timer
	closeOnce  sync.Once
	done       chan struct{}
}

func (srv *Server) newSession(l *listener, from netip.AddrPort) (*session, error) {
	if srv.closing.Load() {
		return nil, ErrServerClosed
	}
	s := &session{srv: srv, l: l, done: make(chan struct{}),
		registers: rate.NewLimiter(rate.Every(srv.cfg.RegisterInterval), registerBurst)}
	s.touch()
	pc := newSessionConn(l, s.followPeer)
	conn, err := dtls.Server(pc, net.UDPAddrFromAddrPort(from), srv.serverOptions(s)...)
	if err != nil {
		srv.table.remove(s) // CIDs the option builder registered
		return nil, err
	}
	s.pc, s.conn = pc, conn // before the session is shared: no lock needed
	srv.table.add(s, from)
	srv.wg.Add(1)
	go s.run(conn)
	return s, nil
}

// serverOptions builds the pion options of one session: shared settings plus
// callbacks that close over the session.
func (srv *Server) serverOptions(s *session) []dtls.ServerOption {
	cfg := &srv.cfg
	opts := []dtls.ServerOption{
		dtls.WithPSK(nil, s.selectPSK, dtls.WithPSKIdentityLimit(8)),
		dtls.WithCipherSuites(cfg.CipherSuites...),
		dtls.WithEllipticCurves(cfg.Groups...),
		dtls.WithMTU(cfg.MTU),
		dtls.WithReceiveBufferSize(cfg.MaxDatagram),
		dtls.WithVerifyConnection(s.verify),
		dtls.WithServerHelloMessageHook(s.observeServerHello),
		dtls.WithLoggerFactory(srv.pionLog),
	}
	if !cfg.Versions.Has(pskstore.DTLS12) {
		opts = append(opts, dtls.WithMinVersion(versionDTLS13))
	}
	if !cfg.Versions.Has(pskstore.DTLS13) {
		opts = append(opts, dtls.WithMaxVersion(versionDTLS12))
	}
	if cfg.CIDLength > 0 {
		// Unsafe here means: pion moves the peer address on an authenticated
		// CID record without a return routability check, the behaviour of
		// the embedded stacks devices run (RFC 9146 §6). The demultiplexer
		// only routes CID records to the session that issued the CID.
		opts = append(opts, dtls.WithConnectionID(s.newCID, dtls.CIDPathMigrationUnsafe))
	}
	return opts
}

// newCID issues a random Connection ID and routes it to this session.
func (s *session) newCID() []byte {
	cid := make([]byte, s.srv.cfg.CIDLength)
	_, _ = rand.Read(cid)
	s.srv.table.addCID(s, cid)
	return cid
}

// cidList is the session's Connection IDs; called with table.mu held.
func (s *session) cidList() [][]byte { return s.cids }

// selectPSK is pion's server PSK callback: the first offered identity the
// store knows wins. Unknown identities and store failures both end in the
// same handshake_failure alert, so a prober learns nothing.
func (s *session) selectPSK(identities [][]byte) (*dtls.PSK, error) {
	ctx, cancel := context.WithTimeout(s.srv.ctx, s.srv.cfg.LookupTimeout)
	defer cancel()
	for _, id := range identities {
		start := time.Now()
		key, err := s.srv.cfg.Store.Lookup(ctx, id)
		s.srv.lookup.Observe(since(start))
		if errors.Is(err, pskstore.ErrUnknownIdentity) {
			continue
		}
		if err != nil {
			s.srv.storeErrors.Inc()
			s.setFailure("store_error")
			return nil, err
		}
		s.mu.Lock()
		s.key, s.hasKey, s.tag = key, true, s.srv.cfg.IdentityTag(id)
		s.mu.Unlock()
		return &dtls.PSK{Identity: id, Key: key.Secret, Hash: keyHash(key)}, nil
	}
	s.setFailure("unknown_identity")
	return nil, nil
}

// observeServerHello records whether a DTLS 1.3 ServerHello selected a PSK
// without a key share, i.e. psk_ke (RFC 8446 §4.2.9). pion's State does not
// say; verify checks it against the key's allowed modes (R3).
func (s *session) observeServerHello(m handshake.MessageServerHello) handshake.Message {
	var psk, share bool
	for _, e := range m.Extensions {
		switch e.ExtensionType() {
		case extension.TypePreSharedKey:
			psk = true
		case extension.TypeKeyShare:
			share = true
		}
	}
	s.mu.Lock()
	s.pskOnly = psk && !share
	s.mu.Unlock()
	return &m
}

// verify runs before the handshake completes; an error aborts it.
func (s *session) verify(state *dtls.State) error {
	s.mu.Lock()
	key, ok, pskOnly := s.key, s.hasKey, s.pskOnly
	s.mu.Unlock()
	if !ok {
		return errNoKey
	}
	err := checkSession(key, state, pskOnly, s.l.missingSNI)
	var pe *pskstore.PolicyError
	if errors.As(err, &pe) {
		s.setFailure("policy_" + string(pe.Rule))
	}
	return err
}

// registerBurst is how many Registers a session may send back to back
// before RegisterInterval applies (a device that retries after an error).
const registerBurst = 5

var errNoKey = errors.New("gateway: handshake completed without a selected key")

func (s *session) setFailure(reason string) {
	s.mu.Lock()
	if s.failure == "" {
		s.failure = reason
	}
	s.mu.Unlock()
}

func (s *session) identity() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasKey {
		return nil
	}
	return s.key.Identity
}

// followPeer is called on every write pion makes; pion only writes to a new
// address after accepting an authenticated CID record from it.
func (s *session) followPeer(to netip.AddrPort) {
	if from, moved := s.srv.table.moveAddr(s, to); moved {
		s.srv.log.Info("peer address changed", zap.Stringer("remote", to),
			zap.Stringer("previous", from), zap.String("identity_tag", s.identityTag()))
	}
}

func (s *session) identityTag() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tag
}

func (s *session) touch() { s.lastActive.Store(time.Now().UnixNano()) }
