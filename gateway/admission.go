package gateway

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Admission control against floods of ClientHellos, spoofed or not (issue
// 12). pion runs its cookie exchange inside a per-peer Conn, so every
// ClientHello that reaches pion costs a Conn — some 40-55 KB held, four
// goroutines and 120-220 µs of CPU before its cookie even leaves, 170-270
// µs with its tear-down (BenchmarkEmbryonicHandshake) — before the cookie
// proves the address; a stateless cookie in front of pion is impossible
// (SECURITY.md says why). The read loop therefore decides, cheaply and
// without pion, which hellos get a Conn:
//
//  1. per source, token buckets of new handshakes: per address
//     (HandshakeRate) and per prefix, an IPv4 /24 or IPv6 /64
//     (PrefixHandshakeRate) — ratelimit.go;
//  2. a class per hello: returning (its address completed a handshake in
//     the last RecentHandshakeWindow, recent.go), retry (a retransmission
//     of a hello shed under pressure, recent.go) or new;
//  3. per class, a global token bucket (NewHandshakeRate each) and a queue
//     of embryonic handshakes — whose cookie has not come back, whatever
//     number of datagrams they have seen — capped at its share of
//     MaxEmbryonic, the oldest evicted first once it had its time to
//     answer (evictAfterNew, evictAfterPriority);
//  4. a pool of MaxHandshakes handshakes in pion, a quarter of which only
//     the priority classes (returning, retry) may take.
//
// A hello refused by 3 or 4 is shed and counted; new hellos are remembered
// so that their retransmission is served as a retry. Which hellos find a
// token is decided by their arrival time only, so for any one device the
// shedding is random. A spoofed flood therefore costs pion at most
// NewHandshakeRate Conns a second per class whatever its rate, new devices
// get in on their first retransmission, returning devices and the
// datagrams of established sessions do not compete with it at all, and a
// hello that answers a cookie goes to its handshake (listener.route),
// which it shields from eviction for answerGrace.
type admission struct {
	maxHandshakes int
	reserved      int // pool slots only the priority classes may take
	perIP         *bucketTable
	perPrefix     *bucketTable
	bits4, bits6  int
	log           *zap.Logger

	admitted [numHelloClasses]atomic.Uint64

	mu        sync.Mutex
	buckets   [numHelloClasses]*rate.Limiter
	queues    [numHelloClasses]embryoQueue
	inPool    int
	inPoolNew int
	nEmbryo   int
	recent    *recentAddrs
	shed      *shedHellos
	relief    relief
}

// helloClass is what admission knows of a ClientHello's source.
type helloClass uint8

const (
	classNew       helloClass = iota // never seen: maybe spoofed
	classRetry                       // retransmission of a hello shed under pressure
	classReturning                   // its address completed a handshake recently
	numHelloClasses
)

var helloClassNames = [numHelloClasses]string{"new", "retry", "returning"}

func (c helloClass) String() string { return helloClassNames[c] }

// embryoQueue holds one class's embryonic handshakes, oldest first; entries
// that grew up or ended are skipped and dropped from the front.
type embryoQueue struct {
	max int
	n   int // embryonic handshakes of the class
	q   []*handshake
}

const (
	// answerGrace is how long a hello that answers the cookie shields its
	// handshake from eviction: pion verifies it within a round of its own
	// (a bogus answer ends the handshake), so the grace only bounds what a
	// spoofer gains by answering its own cookie with garbage.
	answerGrace = 2 * time.Second
	// evictScan bounds the queue entries one admission looks at for a
	// victim: if all are shielded, the new hello is shed instead.
	evictScan = 64
	// evictAfterNew and evictAfterPriority are the youngest an embryonic
	// handshake may be evicted at: a device gets that long to answer its
	// cookie, and a full queue of younger ones sheds the new hello
	// instead. An evicted device is worse off than a shed one: its answer
	// finds no handshake (stale_hello) and only its own handshake timeout
	// starts it over, while a shed hello is simply retransmitted.
	// Priority classes are mostly real devices: they get longer.
	evictAfterNew      = time.Second
	evictAfterPriority = 3 * time.Second
)

func newAdmission(cfg *Config) *admission {
	log := cfg.Logger.With(zap.String("component", "gateway"))
	a := &admission{
		log:           log,
		maxHandshakes: cfg.MaxHandshakes,
		reserved:      cfg.MaxHandshakes / 4,
		perIP:         newBucketTable(cfg.HandshakeRate, cfg.HandshakeBurst),
		perPrefix:     newBucketTable(cfg.PrefixHandshakeRate, cfg.PrefixHandshakeBurst),
		bits4:         cfg.PrefixLengthIPv4,
		bits6:         cfg.PrefixLengthIPv6,
		recent:        newRecentAddrs(cfg.RecentHandshakeWindow, cfg.MaxRecentAddresses),
		shed:          newShedHellos(),
	}
	// Half of the embryonic cap is for new addresses, a quarter for each
	// priority class: a flood of new sources holds at most half of the
	// memory the cap allows (bench/BENCHMARKS.md: the heap it leaves behind
	// in the runtime grows with that peak).
	priority := max(cfg.MaxEmbryonic/4, 1)
	a.queues[classNew].max = max(cfg.MaxEmbryonic-2*priority, 1)
	a.queues[classRetry].max = priority
	a.queues[classReturning].max = priority
	for c := range a.buckets {
		a.buckets[c] = rate.NewLimiter(rate.Limit(cfg.NewHandshakeRate), max(int(min(cfg.NewHandshakeRate, 1<<20)), 1))
	}
	a.relief.init(a, cfg.MaxEmbryonic, log)
	return a
}

// allowSource charges one new handshake to the source address and its
// prefix; it returns the drop reason when either is over its rate.
func (a *admission) allowSource(ip netip.Addr, now time.Time) (dropReason, bool) {
	if !allow(a.perIP, ip, now) {
		return dropRateLimited, false
	}
	if !allow(a.perPrefix, sourcePrefix(ip, a.bits4, a.bits6), now) {
		return dropPrefixLimited, false
	}
	return 0, true
}

// classify tells the class of a ClientHello datagram p from a source with
// no handshake in progress, and the key under which it is remembered if it
// is shed.
func (a *admission) classify(from netip.AddrPort, p []byte, now time.Time) (helloClass, uint64) {
	random := helloRandom(p)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.recent.has(from.Addr(), now) {
		return classReturning, 0
	}
	if random == nil {
		return classNew, 0
	}
	k := a.shed.key(from, random)
	if a.shed.isRetransmission(k, now) {
		return classRetry, k
	}
	return classNew, k
}

// admit gives a new handshake of class c, built by build, a pool slot and
// queues it as embryonic, evicting the oldest unshielded embryonic
// handshake of its class beyond the class's cap. It reports false when the
// hello is shed — pool full, class bucket empty, or nothing to evict — and
// then builds nothing and remembers a new hello under key (classify) for
// its retransmission. release returns the slot.
func (a *admission) admit(c helloClass, key uint64, now time.Time, build func() *handshake) (hs *handshake, release func(), ok bool) {
	a.mu.Lock()
	q := &a.queues[c]
	var victim *handshake
	switch {
	case a.inPool >= a.maxHandshakes, c == classNew && a.inPoolNew >= a.maxHandshakes-a.reserved:
	case q.n >= q.max && func() bool { victim = q.victim(now, c); return victim == nil }():
	case !a.buckets[c].AllowN(now, 1):
	default:
		ok = true
	}
	if !ok {
		if c == classNew && key != 0 {
			a.shed.remember(key, now)
		}
		started := a.relief.pressure(now)
		a.mu.Unlock()
		a.logPressure(started)
		return nil, nil, false
	}
	started := false
	if victim != nil && victim.phase.CompareAndSwap(phaseEmbryonic, phaseDone) {
		q.n--
		a.nEmbryo--
		started = a.relief.pressure(now)
	} else {
		victim = nil // it grew up meanwhile: verified counts it out
	}
	hs = build()
	hs.class, hs.born = c, now
	q.q = append(q.q, hs)
	q.n++
	a.nEmbryo++
	a.inPool++
	if c == classNew {
		a.inPoolNew++
	}
	q.compact()
	a.mu.Unlock()
	a.logPressure(started)
	a.admitted[c].Add(1)
	if victim != nil {
		victim.evict()
	}
	var once sync.Once
	return hs, func() {
		once.Do(func() {
			a.mu.Lock()
			a.inPool--
			if c == classNew {
				a.inPoolNew--
			}
			a.mu.Unlock()
		})
	}, true
}

// logPressure logs the start of a pressure episode (relief.go).
func (a *admission) logPressure(started bool) {
	if started {
		a.log.Warn("ClientHellos arrive faster than admission allows: shedding new ones and evicting unanswered ones (a flood?)")
	}
}

// victim returns the oldest embryonic handshake of class c's queue that
// is old enough to be evicted and that no answer to its cookie shields,
// looking at evictScan entries at most; nil if there is none. Called with
// a.mu held.
func (q *embryoQueue) victim(now time.Time, c helloClass) *handshake {
	minAge := evictAfterNew
	if c != classNew {
		minAge = evictAfterPriority
	}
	q.compact()
	for i, hs := range q.q {
		if i == evictScan || now.Sub(hs.born) < minAge {
			break // the queue is oldest first: the rest are younger
		}
		if hs.phase.Load() == phaseEmbryonic && !hs.shielded(now) {
			return hs
		}
	}
	return nil
}

// compact drops grown-up and ended handshakes from the front of the queue
// so the slice does not pin them.
func (q *embryoQueue) compact() {
	for len(q.q) > 0 && q.q[0].phase.Load() != phaseEmbryonic {
		q.q[0] = nil
		q.q = q.q[1:]
	}
}

// verified moves a handshake out of the embryonic count: its cookie came
// back from the address.
func (a *admission) verified(hs *handshake) {
	a.mu.Lock()
	a.queues[hs.class].n--
	a.nEmbryo--
	a.queues[hs.class].compact()
	a.mu.Unlock()
}

// handshakeDone ends a handshake's admission: if it was still embryonic
// (failed, or finished without a cookie round trip) it leaves the count. A
// handshake ends once, so its phase moved to done exactly here — or at its
// eviction, which counted it out already.
func (a *admission) handshakeDone(hs *handshake) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !hs.phase.CompareAndSwap(phaseEmbryonic, phaseDone) {
		hs.phase.Store(phaseDone)
		return
	}
	a.queues[hs.class].n--
	a.nEmbryo--
	a.queues[hs.class].compact()
}

// remember records an address that completed a handshake.
func (a *admission) remember(ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recent.add(ip, time.Now())
}

// embryos is the number of embryonic handshakes now.
func (a *admission) embryos() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nEmbryo
}
