package gateway

import (
	"net/netip"
	"sync"

	"golang.org/x/time/rate"
)

// Admission control against floods of ClientHellos (spoofed or not). pion
// runs its cookie exchange inside a per-peer Conn, so every ClientHello from
// a new address costs a pion Conn before the cookie proves the address (a
// stateless cookie in front of pion is impossible: SECURITY.md says why).
// The limits that keep that cost bounded without locking real devices out:
//
//   - per source IP, a token bucket of new handshakes (HandshakeRate);
//   - at most MaxHandshakes handshakes in pion at once, a pool of slots: a
//     ClientHello that finds the pool full is shed and counted, and the
//     device retransmits it; the read loop never waits for a slot;
//   - at most MaxEmbryonic embryonic handshakes — whose cookie has not come
//     back, whatever number of datagrams they have seen — the oldest
//     evicted first. A spoofer never answers the cookie, so its handshakes
//     stay embryonic and are the ones evicted; a real client answers within
//     a round trip and leaves the queue.
type admission struct {
	maxEmbryonic int
	perIP        rate.Limit
	burst        int
	slots        chan struct{}

	mu        sync.Mutex
	limiters  map[netip.Addr]*rate.Limiter
	embryonic []*handshake // FIFO; entries that grew up or ended are skipped
	nEmbryo   int
	recent    map[netip.Addr]struct{} // addresses that completed a handshake
}

// maxTrackedIPs bounds the per-IP limiter table and the recent-address set;
// past it a table starts over.
const maxTrackedIPs = 1 << 16

func newAdmission(cfg *Config) *admission {
	return &admission{
		maxEmbryonic: cfg.MaxEmbryonic,
		perIP:        rate.Limit(cfg.HandshakeRate),
		burst:        cfg.HandshakeBurst,
		slots:        make(chan struct{}, cfg.MaxHandshakes),
		limiters:     make(map[netip.Addr]*rate.Limiter),
		recent:       make(map[netip.Addr]struct{}),
	}
}

// allowSource charges one new handshake to the source IP.
func (a *admission) allowSource(ip netip.Addr) bool {
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

// admit takes a pool slot for a new handshake and queues it as embryonic,
// evicting the oldest embryonic handshakes beyond the cap. It reports false
// when the pool is full; release returns the slot.
func (a *admission) admit(hs *handshake) (release func(), ok bool) {
	select {
	case a.slots <- struct{}{}:
	default:
		return nil, false
	}
	var once sync.Once
	release = func() { once.Do(func() { <-a.slots }) }
	var evict []*handshake
	a.mu.Lock()
	_, hs.known = a.recent[hs.peer.Addr()]
	a.embryonic = append(a.embryonic, hs)
	a.nEmbryo++
	for a.nEmbryo > a.maxEmbryonic && len(a.embryonic) > 0 {
		old := a.embryonic[0]
		a.embryonic[0] = nil
		a.embryonic = a.embryonic[1:]
		if old.phase.CompareAndSwap(phaseEmbryonic, phaseDone) {
			a.nEmbryo--
			evict = append(evict, old)
		}
	}
	a.compactLocked()
	a.mu.Unlock()
	for _, old := range evict {
		old.evict()
	}
	return release, true
}

// verified moves a handshake out of the embryonic count: its cookie came
// back from the address.
func (a *admission) verified(*handshake) {
	a.mu.Lock()
	a.nEmbryo--
	a.compactLocked()
	a.mu.Unlock()
}

// handshakeDone ends a handshake's admission: if it was still embryonic
// (failed, evicted, or finished without a cookie round trip) it leaves the
// count. A handshake ends once, so its phase moved to done exactly here.
func (a *admission) handshakeDone(hs *handshake) {
	if !hs.phase.CompareAndSwap(phaseEmbryonic, phaseDone) {
		hs.phase.Store(phaseDone)
		return
	}
	a.mu.Lock()
	a.nEmbryo--
	a.compactLocked()
	a.mu.Unlock()
}

// compactLocked drops grown-up and ended handshakes from the front of the
// queue so the slice does not pin them.
func (a *admission) compactLocked() {
	for len(a.embryonic) > 0 && a.embryonic[0].phase.Load() != phaseEmbryonic {
		a.embryonic[0] = nil
		a.embryonic = a.embryonic[1:]
	}
}

// remember records an address that completed a handshake.
func (a *admission) remember(ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.recent) >= maxTrackedIPs {
		a.recent = make(map[netip.Addr]struct{})
	}
	a.recent[ip] = struct{}{}
}

// embryos is the number of embryonic handshakes now.
func (a *admission) embryos() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nEmbryo
}
