package gateway

import (
	"net"
	"strings"

	"github.com/lwm2m-gateway/gateway/lwm2m"
	"github.com/lwm2m-gateway/gateway/pskstore"
)

// upstream is one connected UDP socket from a session to one backend. A
// session has one per backend it talks to: its identity's backend, and the
// bootstrap server once the device asks for bootstrap.
type upstream struct {
	name string
	conn *net.UDPConn
}

// backendFor chooses the identity's backend: the one its key names, else
// the one its handshake's server name maps to, else the listener's, else
// the gateway's default.
func (s *session) backendFor(key pskstore.Key, serverName string) string {
	if key.Backend != "" {
		return key.Backend
	}
	for sni, name := range s.srv.cfg.ServerNameBackends {
		if serverName != "" && strings.EqualFold(sni, serverName) {
			return name
		}
	}
	if s.l.backend != "" {
		return s.l.backend
	}
	return s.srv.cfg.DefaultBackend
}

// dialUpstream opens (or returns) the session's socket to backend name and
// starts its backend→device goroutine.
func (s *session) dialUpstream(name string) (*upstream, error) {
	s.mu.Lock()
	for _, up := range s.ups {
		if up.name == name {
			s.mu.Unlock()
			return up, nil
		}
	}
	s.mu.Unlock()
	addr, ok := s.srv.cfg.Backends[name]
	if !ok {
		return nil, ErrNoBackend
	}
	// One connected socket per session and backend (DESIGN §1): the backend
	// sees one address per device, and only this device reads what arrives
	// on it (L3).
	c, err := net.Dial("udp", addr)
	if err != nil {
		return nil, err
	}
	up := &upstream{name: name, conn: c.(*net.UDPConn)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = up.conn.Close()
		return nil, net.ErrClosed
	}
	s.ups = append(s.ups, up)
	s.mu.Unlock()
	s.srv.wg.Add(1)
	go s.fromBackend(up)
	return up, nil
}

// primary is the socket to the identity's backend, dialled again if a
// De-register closed it.
func (s *session) primary() (*upstream, error) {
	return s.dialUpstream(s.backend)
}

// dropUpstream closes one upstream socket: after a De-register the backend
// forgot the device, so its socket (and address) has no more use; the next
// Register opens a fresh one.
func (s *session) dropUpstream(up *upstream) {
	s.mu.Lock()
	for i, u := range s.ups {
		if u == up {
			s.ups = append(s.ups[:i], s.ups[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	_ = up.conn.Close()
}

// route picks the backend for a datagram from the device: a
// Bootstrap-Request goes to the bootstrap server when one is configured;
// other requests to the identity's backend; answers (ACK, RST, separate
// responses, notifications) to the backend whose request they answer.
// Called with bmu held.
func (s *session) route(m lwm2m.Message) (*upstream, error) {
	if m.Kind == lwm2m.BootstrapRequest && s.srv.cfg.BootstrapBackend != "" {
		return s.dialUpstream(s.srv.cfg.BootstrapBackend)
	}
	if !m.Kind.IsRequest() {
		if up := s.origins.find(m); up != nil {
			return up, nil
		}
	}
	return s.primary()
}

// origins remembers which backend sent recent requests, by message ID (for
// piggybacked ACKs and RSTs) and by token (for separate responses and
// notifications). It is bounded: an answer to a request older than the last
// maxOrigins goes to the identity's backend.
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
