package gateway

import (
	"time"
)

// The sweeper is one goroutine that ends idle sessions, instead of a timer
// per session: a sleeping device costs no timer. Idle limits are minutes
// long, so checking every few seconds is exact enough.

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
			for _, s := range srv.table.snapshot() {
				if s.idleFor(now) >= s.idleLimit() {
					s.close("idle timeout", true)
					continue
				}
				s.tick(now)
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

// tick lets the record layer retransmit what awaits an acknowledgement.
func (s *session) tick(now time.Time) {
	if s.lean == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.lean.tick(s, now)
	}
}
