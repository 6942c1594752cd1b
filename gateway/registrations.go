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

// Registrations lists the live registrations, sorted by endpoint.
func (srv *Server) Registrations() []Registration {
	var out []Registration
	for _, s := range srv.table.snapshot() {
		s.bmu.Lock()
		b := s.binding
		var loc, ep string
		var lt time.Duration
		var ok bool
		if b != nil {
			loc, lt, ok = b.Registered()
			ep = b.Endpoint()
		}
		s.bmu.Unlock()
		if !ok {
			continue
		}
		out = append(out, Registration{
			IdentityTag: s.identityTag(),
			Endpoint:    ep,
			Location:    loc,
			Lifetime:    lt,
			Remote:      srv.table.peerAddr(s).String(),
			IdleFor:     time.Since(time.Unix(0, s.lastActive.Load())),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Endpoint < out[j].Endpoint })
	return out
}
