package gateway

import (
	"errors"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lwm2m-gateway/gateway/lwm2m"
	"go.uber.org/zap"
)

// upstream is one connected UDP socket from a session to one backend. A
// session has one per backend it talks to (its identity's backend, and the
// bootstrap server once the device asks for bootstrap): the backend sees one
// address per device, and only this device reads what arrives on it (L3).
//
// The sockets are not read by a goroutine each: the poller (poller_linux.go)
// waits on all of them and hands each datagram to its session. Reads,
// writes and the close happen under the session's mu.
type upstream struct {
	s      *session
	name   string
	p      *poller // the event loop that reads sock
	sock   upstreamSocket
	local  netip.AddrPort
	closed bool

	// downAt is when the socket last reported the backend unreachable
	// (ICMP port unreachable: ECONNREFUSED), in unix nanoseconds; zero
	// once the backend answers again.
	downAt atomic.Int64
}

// backendDownHold is how long after an ICMP port unreachable the backend
// counts as down: confirmable requests get 5.03 instead of being forwarded
// into the void. After it, requests are forwarded again, which probes.
const backendDownHold = 10 * time.Second

func (up *upstream) markDown() { up.downAt.Store(time.Now().UnixNano()) }

func (up *upstream) markUp() {
	if up.downAt.Load() != 0 {
		up.downAt.Store(0)
	}
}

func (up *upstream) isDown(now time.Time) bool {
	at := up.downAt.Load()
	return at != 0 && now.Sub(time.Unix(0, at)) < backendDownHold
}

// write sends one datagram to the backend. Called with up.s.mu held.
func (up *upstream) write(p []byte) error {
	if up.closed {
		return errUpstreamClosed
	}
	err := up.sock.write(p)
	if errors.Is(err, syscall.ECONNREFUSED) {
		up.markDown()
	}
	return err
}

// close releases the socket. Called with up.s.mu held.
func (up *upstream) close() {
	if up.closed {
		return
	}
	up.closed = true
	up.p.remove(up)
	up.sock.close()
}

var errUpstreamClosed = errors.New("gateway: upstream socket closed")

// dialUpstreamLocked opens (or returns) the session's socket to backend
// name. Called with s.mu held.
func (s *session) dialUpstreamLocked(name string) (*upstream, error) {
	for _, up := range s.ups {
		if up.name == name {
			return up, nil
		}
	}
	addr, ok := s.srv.backends[name]
	if !ok {
		return nil, ErrNoBackend
	}
	up := &upstream{s: s, name: name}
	sock, local, err := s.srv.pollers[s.loop].dial(up, s.srv.upstreamSource(s), 0, addr)
	if err != nil {
		return nil, err
	}
	up.sock, up.local = sock, local
	s.ups = append(s.ups, up)
	return up, nil
}

// primaryLocked is the socket to the identity's backend, dialled again if
// a De-register closed it.
func (s *session) primaryLocked() (*upstream, error) {
	return s.dialUpstreamLocked(s.backend)
}

// dropUpstreamLocked closes one upstream socket: after a De-register the
// backend forgot the device, so its socket (and address) has no more use;
// the next Register opens a fresh one.
func (s *session) dropUpstreamLocked(up *upstream) {
	for i, u := range s.ups {
		if u == up {
			s.ups = append(s.ups[:i], s.ups[i+1:]...)
			break
		}
	}
	up.close()
}

// upstreamWriteFailed counts a failed write to a backend.
func (s *session) upstreamWriteFailed(up *upstream, err error) {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return // counted when the device's next request meets a down backend
	}
	s.srv.stats.upstreamErrors.Add(1)
	s.srv.sampled.Warn("write to backend", zap.String("identity_tag", s.srv.tag(s.identity)),
		zap.String("backend", up.name), zap.Error(err))
}

// routeLocked picks the backend for a datagram from the device: a
// Bootstrap-Request goes to the bootstrap server when one is configured;
// other requests to the identity's backend; answers (ACK, RST, separate
// responses, notifications) to the backend whose request they answer.
// Called with s.mu held.
func (s *session) routeLocked(m lwm2m.Message) (*upstream, error) {
	if m.Kind == lwm2m.BootstrapRequest && s.srv.cfg.BootstrapBackend != "" {
		return s.dialUpstreamLocked(s.srv.cfg.BootstrapBackend)
	}
	if !m.Kind.IsRequest() {
		if up := s.origins.find(m); up != nil && !up.closed {
			return up, nil
		}
	}
	return s.primaryLocked()
}

// upstreamSource picks the local address a session's upstream sockets bind
// to from Config.UpstreamSources (by identity, so a session's sockets share
// one), or the zero Addr to let the kernel choose.
func (srv *Server) upstreamSource(s *session) netip.Addr {
	n := len(srv.cfg.UpstreamSources)
	if n == 0 {
		return netip.Addr{}
	}
	var h uint32 = 2166136261 // FNV-1a
	for _, b := range s.identity {
		h = (h ^ uint32(b)) * 16777619
	}
	return srv.cfg.UpstreamSources[h%uint32(n)]
}

// origins remembers which backend sent recent requests, by message ID (for
// piggybacked ACKs and RSTs) and by token (for separate responses and
// notifications). It is bounded: an answer to a request older than the last
// maxOrigins goes to the identity's backend. It is only allocated once a
// second backend (bootstrap) is in use.
type origins struct {
	byMID   map[uint16]*upstream
	byToken map[string]*upstream
}

const maxOrigins = 256

func (o *origins) record(m lwm2m.Message, up *upstream) {
	if o.byMID == nil || len(o.byMID) >= maxOrigins {
		o.byMID = make(map[uint16]*upstream)
	}
	if o.byToken == nil || len(o.byToken) >= maxOrigins {
		o.byToken = make(map[string]*upstream)
	}
	o.byMID[m.MessageID] = up
	if len(m.Token) > 0 {
		o.byToken[string(m.Token)] = up
	}
}

func (o *origins) find(m lwm2m.Message) *upstream {
	if len(m.Token) > 0 {
		if up, ok := o.byToken[string(m.Token)]; ok {
			return up
		}
	}
	if up, ok := o.byMID[m.MessageID]; ok {
		return up
	}
	return nil
}
