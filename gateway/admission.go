package gateway

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Admission control against floods of ClientHellos (spoofed or not). pion
// runs its cookie exchange inside a per-peer Conn, so every ClientHello from
// a new address costs a session before the cookie proves the address. Three
// limits keep that cost bounded without locking out real devices:
//
//   - per source IP, a token bucket of new sessions (HandshakeRate);
//   - in total, at most MaxSessions sessions;
//   - "embryonic" sessions — created by one ClientHello, never heard from
//     again — are capped at MaxEmbryonic, oldest evicted first. A spoofer
//     never answers the cookie, so its sessions stay embryonic and are the
//     ones evicted; a real client answers within a round trip and leaves
//     the queue.
type admission struct {
	maxSessions  int
	maxEmbryonic int
	perIP        rate.Limit
	burst        int

	mu        sync.Mutex
	limiters  map[netip.Addr]*rate.Limiter
	embryonic []*session // FIFO; entries that grew up are skipped on pop
}

// maxTrackedIPs bounds the per-IP limiter table; past it the table starts
// over (a flood from many addresses then meets the embryonic cap instead).
const maxTrackedIPs = 1 << 16

func newAdmission(cfg *Config) *admission {
	return &admission{
		maxSessions:  cfg.MaxSessions,
		maxEmbryonic: cfg.MaxEmbryonic,
		perIP:        rate.Limit(cfg.HandshakeRate),
		burst:        cfg.HandshakeBurst,
		limiters:     make(map[netip.Addr]*rate.Limiter),
	}
}

// allowIP charges one new session to the source IP.
func (a *admission) allowIP(ip netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.limiters[ip]
	if l == nil {
		if len(a.limiters) >= maxTrackedIPs {
			a.limiters = make(map[netip.Addr]*rate.Limiter)
		}
		l = rate.NewLimiter(a.perIP, a.burst)
		a.limiters[ip] = l
	}
	return l.Allow()
}

// admitEmbryo queues a new session and returns the embryonic sessions to
// evict to stay within the cap.
func (a *admission) admitEmbryo(s *session) (evict []*session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.embryonic = append(a.embryonic, s)
	for len(a.embryonic) > a.maxEmbryonic {
		old := a.embryonic[0]
		a.embryonic[0] = nil
		a.embryonic = a.embryonic[1:]
		if old.isEmbryonic() {
			evict = append(evict, old)
		}
	}
	// Drop grown-up sessions from the front so the slice does not pin them.
	for len(a.embryonic) > 0 && !a.embryonic[0].isEmbryonic() {
		a.embryonic[0] = nil
		a.embryonic = a.embryonic[1:]
	}
	return evict
}

// embryoState tracks how far a session got; only the demultiplexer's
// goroutine and close write it.
type embryoState struct {
	datagrams atomic.Uint32
	born      time.Time
}

func (s *session) isEmbryonic() bool {
	return s.embryo.datagrams.Load() <= 1 && !s.isEstablished()
}

func (s *session) isEstablished() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.established || s.closed
}
