package gateway

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-gateway/gateway/lwm2m"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// session is one established DTLS association: the state the gateway owns
// once pion's handshake has completed and passed the policy (DESIGN §1).
//
// State machine: a handshake (handshake.go, in pion) becomes an established
// session (establish.go) and ends closed; there is no other state. Its
// records are protected by one of two planes, fixed at establishment:
//
//   - lean (Config.DataPlane zero value): the gateway's own record layer
//     (plane_lean.go, internal/record). No goroutine: the listener's read
//     loop opens the device's records and writes upstream, the upstream
//     poller seals the backend's datagrams and writes to the device.
//   - pion: the handshake's *dtls.Conn stays (plane_pion.go), with its
//     goroutines; kept as a fallback for one release.
//
// One lock, mu, guards everything that changes. Lock order: session.mu,
// then table.mu, poller.mu and registry.mu; nothing holding one of those
// takes a session's mu. The upstream sockets are read and written, and
// closed, only under mu, so a closed socket's descriptor can never be
// reused under a session that still holds it (L3).
type session struct {
	srv  *Server
	l    *listener
	loop int // the event loop that reads its upstream sockets (Config.EventLoops)

	// Fixed at establishment.
	id          [16]byte // random; names the session's snapshot (checkpoint.go)
	keyHash     [16]byte // SHA-256 of the PSK, truncated: a restore checks the key did not change
	identity    []byte
	endpoint    string
	backend     string
	params      sessionParams
	established time.Time

	lastActive atomic.Int64 // unix nanoseconds, either direction
	// sweepAfter: the sweeper (sweep.go) skips the session until this
	// time (unix nanoseconds): nothing is due before. Stored by tick under
	// mu; reset to 0 (look at the next sweep) under mu by any traffic.
	sweepAfter atomic.Int64

	mu        sync.Mutex
	lean      *leanPlane // exactly one of lean and pion is set
	pion      *pionPlane
	peer      netip.AddrPort // the device's address: routes and writes
	via       netip.AddrPort // the replica the device's records now reach (cluster.go); zero: direct
	cids      [][]byte       // Connection IDs routed to this session
	binding   *lwm2m.Binding // L1/L2 state of this association
	origins   origins        // which backend asked what, to route answers
	registers *rate.Limiter  // Register/Bootstrap-Request rate (4.29)
	ups       []*upstream
	closed    bool

	// Crash-safe sequence numbers (checkpoint.go): records are sealed only
	// below limit, a reservation persisted in a snapshot; 0 while the
	// session is in no snapshot yet. active: traffic since the last one.
	limit    uint64
	active   bool
	restored bool // continued from a snapshot (restart, takeover)
}

// registerBurst is how many Registers a session may send back to back
// before RegisterInterval applies (a device that retries after an error).
const registerBurst = 5

// touch records traffic: the idle clock restarts, and the
// sweeper looks at the session again at its next pass.
func (s *session) touch() {
	s.lastActive.Store(time.Now().UnixNano())
	s.sweepAfter.Store(0)
}

// idleFor is how long the session has seen no datagram either way.
func (s *session) idleFor(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, s.lastActive.Load()))
}

// fromWire handles one datagram the demultiplexer routed to this session.
func (s *session) fromWire(p []byte, from netip.AddrPort) {
	if s.pion != nil {
		s.pion.deliver(p, from)
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	closed := s.lean.open(s, p, from, netip.AddrPort{})
	s.mu.Unlock()
	if closed {
		s.close("device closed the session", false)
	}
}

// fromRelay handles a device's datagram another replica received (the
// load balancer sends the device there now): answers go back through it.
func (s *session) fromRelay(p []byte, from, via netip.AddrPort) {
	if s.lean == nil {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	closed := s.lean.open(s, p, from, via)
	s.mu.Unlock()
	if closed {
		s.close("device closed the session", false)
	}
}

// deviceData handles one decrypted application payload from the device:
// the LwM2M checks, then the upstream write (both under mu). It returns a
// CoAP answer the gateway sends the device itself, if any.
func (s *session) deviceDataLocked(p []byte) (reply []byte) {
	s.touch()
	s.active = true
	up, reply := s.admitLocked(p)
	if up == nil {
		return reply
	}
	s.srv.stats.toBackend(up.name, len(p))
	if err := up.write(p); err != nil {
		s.upstreamWriteFailed(up, err)
	}
	return nil
}

// backendDataLocked handles one datagram from a backend for this device:
// learning (registration location, origins), then the write to the device.
// The lean plane seals and sends at once; the pion plane must write outside
// mu (pion calls back into the session), so the payload is returned for the
// caller to write after unlocking.
func (s *session) backendDataLocked(up *upstream, p []byte) (pionWrite []byte) {
	s.touch()
	s.active = true
	ended := s.learnLocked(p, up)
	s.srv.stats.toDevice(up.name, len(p))
	if s.pion != nil {
		pionWrite = p
	} else {
		s.lean.send(s, p)
	}
	if ended {
		// De-registered (2.02) or forgotten by the backend (4.04): the
		// answer is on its way, the socket has no more use.
		s.srv.log.Info("registration ended, upstream socket closed",
			zap.String("identity_tag", s.srv.tag(s.identity)), zap.String("backend", up.name))
		s.dropUpstreamLocked(up)
	}
	return pionWrite
}

// close ends the session once: close_notify to the device when notify,
// upstream sockets closed, every route removed. A device that rebooted is
// not sent a close_notify under keys it no longer has.
func (s *session) close(reason string, notify bool) { s.end(reason, notify, false) }

// closeKeepingSnapshot ends the session silently and keeps its snapshot,
// for another process (or this one, later) to continue it.
func (s *session) closeKeepingSnapshot(reason string) { s.end(reason, false, true) }

func (s *session) end(reason string, notify, keepSnapshot bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.srv.table.remove(s)
	if !keepSnapshot {
		s.forgetSnapshotLocked()
	}
	for _, up := range s.ups {
		up.close()
	}
	s.ups = nil
	pion := s.pion
	if s.lean != nil {
		s.lean.close(s, notify)
	}
	s.mu.Unlock()
	if pion != nil {
		pion.close(notify)
	}
	s.srv.log.Info("session closed", zap.String("identity_tag", s.srv.tag(s.identity)), zap.String("reason", reason))
}

func (s *session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// movePeerLocked follows the device to a new address after an authenticated
// record newer than any before came from there.
func (s *session) movePeerLocked(to netip.AddrPort) {
	if to == s.peer {
		return
	}
	from := s.peer
	s.srv.table.moveAddr(s, from, to)
	s.peer = to
	s.srv.log.Info("peer address changed", zap.Stringer("remote", to),
		zap.Stringer("previous", from), zap.String("identity_tag", s.srv.tag(s.identity)))
}
