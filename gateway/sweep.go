package gateway

import (
	"time"
)

// The sweeper is one goroutine that ends idle sessions, instead of a timer
// per session: a sleeping device costs no timer. Idle limits are minutes
// long, so checking every few seconds is exact enough. It also runs the
// record layer's timers and releases idle sessions' ciphers. A session
// with nothing due before a known time (session.sweepAfter) is skipped
// with one atomic load: with 100,000 sleeping devices a pass no longer
// locks each one (bench/BENCHMARKS.md, "Gateway CPU while ... idle").

// sweepInterval is how often the sweeper looks at every session: a quarter
// of the idle timeout, between 50 ms and 5 s.
func (srv *Server) sweepInterval() time.Duration {
	return min(max(srv.cfg.IdleTimeout/4, 50*time.Millisecond), 5*time.Second)
}

// sweep runs until stop is closed.
func (srv *Server) sweep(stop <-chan struct{}) {
	t := time.NewTicker(srv.sweepInterval())
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			at := now.UnixNano()
			for _, s := range srv.table.snapshot() {
				if after := s.sweepAfter.Load(); after != 0 && at < after {
					continue
				}
				limit := s.idleLimit()
				if s.idleFor(now) >= limit {
					s.close("idle timeout", true)
					continue
				}
				s.tick(now, limit)
			}
		}
	}
}

// idleLimit is how long a session may be silent: a registered device may
// stay silent for its whole LwM2M lifetime (queue mode), so its limit is the
// larger of IdleTimeout and lifetime plus RegistrationGrace.
func (s *session) idleLimit() time.Duration {
	limit := s.srv.cfg.IdleTimeout
	s.mu.Lock()
	_, lifetime, ok := s.binding.Registered()
	s.mu.Unlock()
	if ok && lifetime+s.srv.cfg.RegistrationGrace > limit {
		limit = lifetime + s.srv.cfg.RegistrationGrace
	}
	return limit
}

// tick lets the record layer retransmit what awaits an acknowledgement
// and drop what it no longer needs, releases the ciphers of an idle
// session, and sets when the sweeper must look again: the first of the
// idle limit, the cipher release and the record layer's next timer.
// Under mu, so traffic that resets sweepAfter is never overwritten by an
// older computation.
func (s *session) tick(now time.Time, idleLimit time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	next := s.lastActive.Load() + int64(idleLimit)
	if s.lean != nil {
		next = min(next, s.lean.tick(s, now))
	}
	s.sweepAfter.Store(next)
}
