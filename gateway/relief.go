package gateway

import (
	"runtime/debug"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// relief gives memory back to the operating system once a flood is over.
// A flood fills the embryonic queues and the handshake pool: the Go heap
// grows to hold them (tens of kilobytes per handshake in pion) and keeps
// the pages after the handshakes end; the runtime's background scavenger
// returns them only slowly. So the first shed or evicted ClientHello
// starts an episode (logged once), and once nothing has been shed or
// evicted for quiet and the embryonic handshakes are down to lowWater,
// relief drops the table of shed hellos and returns the free pages
// (debug.FreeOSMemory, twice: what sync.Pools such as pion's read buffers
// held goes at the second collection), once per episode, and logs the end.
// What stays is what the Go runtime never gives back — a descriptor per
// goroutine that ever ran at once, span and GC metadata for the peak heap —
// which grows with the peak, hence the embryonic caps. No goroutine waits meanwhile: a timer
// checks every period (after Close it ends within quiet, as nothing is
// shed any more). The work happens once per flood, never per datagram. With a GOMEMLIMIT (deploy/kubernetes) the runtime also
// collects harder while a flood lasts.
type relief struct {
	a        *admission
	quiet    time.Duration
	period   time.Duration
	lowWater int
	log      *zap.Logger
	// free returns memory to the OS; tests replace it.
	free func()

	// Guarded by a.mu.
	last  time.Time // last pressure event
	since time.Time // start of the episode
	under bool      // an episode is in progress
	armed bool      // a check is scheduled

	episodes atomic.Uint64 // episodes ended with memory returned
}

const (
	reliefQuiet  = 10 * time.Second
	reliefPeriod = 5 * time.Second
)

func (r *relief) init(a *admission, maxEmbryonic int, log *zap.Logger) {
	r.a, r.quiet, r.period, r.lowWater, r.log, r.free = a, reliefQuiet, reliefPeriod, max(maxEmbryonic/16, 16), log, debug.FreeOSMemory
}

// pressure records a shed or evicted ClientHello at now and reports
// whether it started an episode. Called with a.mu held.
func (r *relief) pressure(now time.Time) (started bool) {
	r.last = now
	if !r.under {
		r.under, r.since, started = true, now, true
	}
	if !r.armed {
		r.armed = true
		time.AfterFunc(r.period, r.check)
	}
	return started
}

// check ends the episode if it is over, or looks again later.
func (r *relief) check() {
	a := r.a
	a.mu.Lock()
	now := time.Now()
	if now.Sub(r.last) < r.quiet || a.nEmbryo > r.lowWater {
		time.AfterFunc(r.period, r.check)
		a.mu.Unlock()
		return
	}
	r.armed, r.under = false, false
	lasted := r.last.Sub(r.since)
	a.shed.forget()
	a.mu.Unlock()
	r.free()
	r.free()
	r.episodes.Add(1)
	r.log.Info("ClientHello pressure over; memory returned to the OS", zap.Duration("lasted", lasted.Round(time.Second)))
}
