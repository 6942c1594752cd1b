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

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
	"github.com/pion/dtls/v4/pkg/protocol/extension"
	pionhs "github.com/pion/dtls/v4/pkg/protocol/handshake"
	"go.uber.org/zap"
)

// A handshake is a DTLS handshake in progress, run by pion over an hsConn.
// pion stays the handshake engine; the gateway owns everything around it:
// admission (admission.go), the key lookup and the policy (psk.go), and,
// once the handshake completes, the hand-over of the association to an
// established session (establish.go).
//
// Phases: embryonic (pion answered the ClientHello with a cookie and the
// device has not answered it yet: a spoofed source never will), verified
// (pion sent a ServerHello, so the cookie came back from the address), and
// done. Only embryonic handshakes are evicted under pressure.
type handshake struct {
	srv   *Server
	l     *listener
	loop  int // the event loop whose socket took its ClientHello (Config.EventLoops)
	peer  netip.AddrPort
	hello hello // parsed first ClientHello; zero fields if it was fragmented
	conn  *hsConn
	born  time.Time
	phase atomic.Uint32
	class helloClass   // admission class (admission.go), set at admission
	reply atomic.Int64 // UnixNano of the first hello that answered the cookie; 0: none yet

	successor atomic.Pointer[session] // the session it became (lean plane)

	mu      sync.Mutex
	dc      *dtls.Conn
	cancel  context.CancelFunc
	key     pskstore.Key // chosen by the PSK callback
	hasKey  bool
	dummy   bool // no such identity (or the store failed): a dummy key answers
	pskOnly bool // DTLS 1.3 ServerHello without key_share: psk_ke
	version protocol.Version
	suite   ciphersuite.ID
	failure string // why the handshake failed, for logs and counters
	clientF bool   // DTLS 1.2: the client's encrypted Finished arrived
	keylog  []byte // NSS key log lines pion wrote (lean data plane)
	cids    [][]byte
	evicted bool
	refused bool   // the policy refused the handshake (psk.go): never established
	keyGen  uint64 // Server.keyChanges when the key was looked up
}

const (
	phaseEmbryonic uint32 = iota
	phaseVerified
	phaseDone
)

// newHandshake prepares a handshake for a ClientHello from peer; run starts
// it. It creates no pion state, so the read loop can afford it.
func (srv *Server) newHandshake(l *listener, peer netip.AddrPort, h hello) *handshake {
	hs := &handshake{srv: srv, l: l, peer: peer, hello: h, born: time.Now()}
	hs.conn = newHSConn(l, srv.cfg.DataPlane == DataPlaneLean, hs.onFlight)
	return hs
}

// run creates the pion Conn and drives the handshake to its end, then hands
// the association over to an established session. It runs on its own
// goroutine, one per handshake in the bounded pool (Config.MaxHandshakes).
func (hs *handshake) run(release func()) {
	srv := hs.srv
	defer srv.wg.Done()
	defer release()
	ctx, cancel := srv.handshakeContext()
	defer cancel()
	dc, err := dtls.Server(hs.conn, net.UDPAddrFromAddrPort(hs.peer), srv.handshakeOptions(hs)...)
	if err != nil {
		hs.fail(err)
		return
	}
	hs.mu.Lock()
	hs.dc, hs.cancel = dc, cancel
	evicted := hs.evicted
	hs.mu.Unlock()
	if evicted {
		hs.fail(context.Canceled)
		return
	}
	if err := dc.HandshakeContext(ctx); err != nil {
		hs.fail(err)
		return
	}
	hs.mu.Lock()
	refused := hs.refused
	hs.mu.Unlock()
	if refused {
		// DTLS 1.2: pion completed while its final flight was replaced
		// by the refusal (psk.go). Nothing is ever forwarded for it.
		hs.fail(errRefused)
		return
	}
	srv.admission.handshakeDone(hs)
	if err := srv.establish(hs, dc); err != nil {
		srv.table.removePending(hs, hs.cidList())
		_ = dc.Close()
		hs.conn.shut()
		switch {
		case errors.Is(err, ErrServerClosed):
		case errors.Is(err, errEndedAtHandOver):
			// A device that closes right after its handshake (a
			// client with nothing to send) is no gateway error.
			srv.stats.handshakeFailed("closed")
			srv.sampled.Info("device ended the connection at the hand-over", zap.Stringer("remote", hs.peer),
				zap.String("identity_tag", srv.tag(hs.key.Identity)))
		default:
			srv.log.Error("cannot establish session", zap.String("identity_tag", srv.tag(hs.key.Identity)), zap.Error(err))
		}
	}
}

// handshakeOptions builds the pion options of one handshake: shared
// settings plus callbacks that close over it.
func (srv *Server) handshakeOptions(hs *handshake) []dtls.ServerOption {
	cfg := &srv.cfg
	opts := []dtls.ServerOption{
		dtls.WithPSK(nil, hs.selectPSK, dtls.WithPSKIdentityLimit(8)),
		dtls.WithCipherSuites(hs.suites()...),
		dtls.WithEllipticCurves(cfg.Groups...),
		dtls.WithMTU(cfg.MTU),
		dtls.WithServerHelloMessageHook(hs.observeServerHello),
		dtls.WithLoggerFactory(srv.pionLog),
	}
	if cfg.DataPlane == DataPlaneLean {
		// Handshake records are small (PSK: no certificates); the lean data
		// plane never reads application data through pion.
		opts = append(opts, dtls.WithReceiveBufferSize(handshakeReceiveBuffer), dtls.WithKeyLogWriter(hs))
	} else {
		opts = append(opts, dtls.WithReceiveBufferSize(cfg.MaxDatagram))
	}
	if !cfg.Versions.Has(pskstore.DTLS12) {
		opts = append(opts, dtls.WithMinVersion(versionDTLS13))
	}
	if !cfg.Versions.Has(pskstore.DTLS13) {
		opts = append(opts, dtls.WithMaxVersion(versionDTLS12))
	}
	if cfg.CIDLength > 0 {
		// Unsafe here means: the peer address moves on an authenticated,
		// newest CID record without a return routability check, the
		// behaviour of the embedded stacks devices run (RFC 9146 §6). The
		// demultiplexer only routes CID records to whoever issued the CID.
		opts = append(opts, dtls.WithConnectionID(hs.newCID, dtls.CIDPathMigrationUnsafe))
	}
	return opts
}

// handshakeReceiveBuffer is pion's read buffer during a handshake on the
// lean data plane: a PSK handshake's records fit one MTU-sized datagram,
// and a smaller buffer makes an embryonic handshake cheaper under a flood.
const handshakeReceiveBuffer = 4096

// suites is the suite list of this handshake. pion picks the DTLS 1.2 suite
// in the client's order among the server's; when the ClientHello offers an
// ECDHE-PSK suite this gateway serves, only those are left for DTLS 1.2, so
// a client that lists a plain-PSK suite first still gets forward secrecy
// (R3). Plain PSK remains only for hellos that offer nothing ephemeral (and
// then only legacy keys pass the policy).
func (hs *handshake) suites() []ciphersuite.ID {
	all := hs.srv.cfg.CipherSuites
	offersECDHE := false
	for _, id := range hs.hello.suites {
		if ecdhePSK(ciphersuite.ID(id)) && served(all, id) {
			offersECDHE = true
			break
		}
	}
	if !offersECDHE {
		return all
	}
	out := make([]ciphersuite.ID, 0, len(all))
	for _, id := range all {
		if is13Suite(id) || ecdhePSK(id) {
			out = append(out, id)
		}
	}
	return out
}

func served(suites []ciphersuite.ID, id uint16) bool {
	for _, s := range suites {
		if uint16(s) == id {
			return true
		}
	}
	return false
}

func is13Suite(id ciphersuite.ID) bool {
	switch id {
	case ciphersuite.TLS_AES_128_GCM_SHA256, ciphersuite.TLS_AES_256_GCM_SHA384,
		ciphersuite.TLS_CHACHA20_POLY1305_SHA256:
		return true
	}
	return false
}

// newCID issues a random Connection ID and routes it to this handshake (and,
// once established, to its session).
func (hs *handshake) newCID() []byte {
	cid := make([]byte, hs.srv.cfg.CIDLength)
	_, _ = rand.Read(cid)
	if c := hs.srv.cluster; c != nil {
		cid[0] = c.id // the owner, for every replica that gets the record
	}
	hs.mu.Lock()
	hs.cids = append(hs.cids, cid)
	hs.mu.Unlock()
	hs.srv.table.addHandshakeCID(hs, cid)
	return cid
}

func (hs *handshake) cidList() [][]byte {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.cids
}

// Write collects the NSS key log pion writes for this handshake: the lean
// data plane needs the DTLS 1.3 client handshake traffic secret to answer a
// client Finished retransmitted after the hand-over. It never leaves the
// process.
func (hs *handshake) Write(p []byte) (int, error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if len(hs.keylog)+len(p) <= maxKeyLog {
		hs.keylog = append(hs.keylog, p...)
	}
	return len(p), nil
}

// maxKeyLog bounds the key log of one handshake (five lines of secrets).
const maxKeyLog = 2048

// observeServerHello records the negotiated version and suite, and whether
// a DTLS 1.3 ServerHello selected a PSK without a key share, i.e. psk_ke
// (RFC 8446 §4.2.9): pion's State does not say. pion also calls it for a
// HelloRetryRequest, which has neither.
func (hs *handshake) observeServerHello(m pionhs.MessageServerHello) pionhs.Message {
	var psk, share bool
	version := protocol.Version1_2
	for _, e := range m.Extensions {
		switch e.ExtensionType() {
		case extension.TypePreSharedKey:
			psk = true
		case extension.TypeKeyShare:
			share = true
		case extension.TypeSupportedVersions:
			version = protocol.Version1_3
		}
	}
	hs.mu.Lock()
	hs.pskOnly = psk && !share
	hs.version = version
	if m.CipherSuiteID != nil {
		hs.suite = ciphersuite.ID(*m.CipherSuiteID)
	}
	hs.mu.Unlock()
	return &m
}

// fail ends a handshake that did not complete: counted by its real reason
// (logs and metrics only; the device sees the same thing for an unknown
// identity and a wrong key), logged (sampled), unrouted.
func (hs *handshake) fail(err error) {
	srv := hs.srv
	srv.admission.handshakeDone(hs)
	srv.table.removePending(hs, hs.cidList())
	hs.mu.Lock()
	reason, dc := hs.failure, hs.dc
	if reason == "" {
		switch {
		case hs.evicted:
			reason = "evicted"
		case hs.clientF && hs.version == protocol.Version1_2:
			// DTLS 1.2: a wrong key makes the client's Finished
			// undecryptable and pion drops it silently, so the handshake
			// ends at its timeout although the reason is the key.
			reason = "bad_key"
		case errors.Is(err, context.DeadlineExceeded):
			reason = "timeout"
		case errors.Is(err, context.Canceled), errors.Is(err, net.ErrClosed):
			reason = "closed"
		default:
			reason = "protocol"
		}
	}
	tag := ""
	if hs.hasKey || hs.dummy {
		tag = srv.tag(hs.key.Identity)
	}
	hs.mu.Unlock()
	if dc != nil {
		_ = dc.Close()
	}
	hs.conn.shut()
	srv.stats.handshakeFailed(reason)
	fields := []zap.Field{zap.Stringer("remote", hs.peer), zap.String("reason", reason), zap.Error(err)}
	if tag != "" {
		fields = append(fields, zap.String("identity_tag", tag))
	}
	if reason == "evicted" || reason == "closed" {
		srv.log.Debug("handshake ended", fields...)
		return
	}
	srv.sampled.Warn("handshake failed", fields...)
}

var errRefused = errors.New("gateway: handshake refused by policy")

// noteAnswer records that a ClientHello answering the cookie arrived for
// this handshake: for answerGrace it shields the handshake from eviction
// (admission.go), so a device that answered is not evicted by the flood
// while pion checks its cookie.
func (hs *handshake) noteAnswer(now time.Time) {
	if hs.phase.Load() == phaseEmbryonic {
		hs.reply.CompareAndSwap(0, now.UnixNano())
	}
}

// shielded reports whether an answer to the cookie shields the handshake
// from eviction at now.
func (hs *handshake) shielded(now time.Time) bool {
	at := hs.reply.Load()
	return at != 0 && now.UnixNano()-at < int64(answerGrace)
}

// evict stops an embryonic handshake to make room (admission.go).
func (hs *handshake) evict() {
	hs.srv.stats.drop(dropEvicted)
	hs.mu.Lock()
	hs.evicted = true
	cancel := hs.cancel
	hs.mu.Unlock()
	hs.conn.shut()
	if cancel != nil {
		cancel()
	}
}

func (hs *handshake) setFailure(reason string) {
	hs.mu.Lock()
	if hs.failure == "" {
		hs.failure = reason
	}
	hs.mu.Unlock()
}

// evictQuietly stops a handshake at shutdown (counted as closed).
func (hs *handshake) evictQuietly() {
	hs.mu.Lock()
	cancel := hs.cancel
	hs.mu.Unlock()
	hs.conn.shut()
	if cancel != nil {
		cancel()
	}
}
