package gateway

import (
	"sort"
	"time"
)

// Registration is one live LwM2M registration seen through the gateway. It
// carries the identity only as its keyed tag (R9), so it is safe to show in
// an admin view.
type Registration struct {
	IdentityTag string
	Endpoint    string        // the endpoint bound to the identity (L1)
	Location    string        // e.g. "/rd/5a3f", as the backend assigned it
	Lifetime    time.Duration // lt from Register/Update
	Remote      string        // the device's current address
	IdleFor     time.Duration // since the last datagram either way
}

// Registrations lists the registrations of live sessions, sorted by
// endpoint.
func (srv *Server) Registrations() []Registration {
	out := []Registration{}
	now := time.Now()
	for _, s := range srv.table.snapshot() {
		s.mu.Lock()
		loc, lt, ok := s.binding.Registered()
		remote := s.peer
		s.mu.Unlock()
		if !ok {
			continue
		}
		out = append(out, Registration{
			IdentityTag: srv.tag(s.identity),
			Endpoint:    s.endpoint,
			Location:    loc,
			Lifetime:    lt,
			Remote:      remote.String(),
			IdleFor:     s.idleFor(now),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Endpoint < out[j].Endpoint })
	return out
}
