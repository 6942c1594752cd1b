package gateway

import (
	"fmt"

	"github.com/lwm2m-gateway/gateway/internal/record"
	"github.com/lwm2m-gateway/gateway/lwm2m"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// sessionFromState rebuilds a lean session from its snapshot: the record
// layer continues at the snapshot's reservation, the registration and
// routes are as they were, and each upstream socket is bound to the local
// address it had, so the backend keeps seeing the same device address (a
// port taken meanwhile gets a fresh one, logged: the device's next Update
// tells the backend).
func (srv *Server) sessionFromState(l *listener, st *sessionState, endpoint string) (*session, error) {
	rec := new(record.Conn)
	if err := rec.UnmarshalBinary(st.record); err != nil {
		return nil, err
	}
	if err := rec.ReserveWriteSeq(st.limit); err != nil {
		return nil, fmt.Errorf("reserve write sequence: %w", err)
	}
	if _, ok := srv.backends[st.backend]; !ok {
		return nil, fmt.Errorf("backend %q: %w", st.backend, ErrNoBackend)
	}
	if endpoint != st.endpoint {
		return nil, fmt.Errorf("the identity's endpoint changed")
	}
	st.params.missingSNI = l.missingSNI
	s := &session{
		srv: srv, l: l, loop: int(st.id[0]) % len(srv.pollers),
		id: st.id, keyHash: st.keyHash,
		identity: st.identity, endpoint: st.endpoint, backend: st.backend,
		params: st.params, established: st.established,
		lean:      &leanPlane{rec: rec, released: true},
		restored:  true,
		peer:      st.peer,
		cids:      st.cids,
		binding:   lwm2m.NewBinding(st.endpoint),
		registers: rate.NewLimiter(rate.Every(srv.cfg.RegisterInterval), registerBurst),
	}
	s.lastActive.Store(st.active.UnixNano())
	// Nothing is sealed before a snapshot of this process reserves numbers
	// above the restored reservation (checkpoint.go): a second crash, or a
	// second takeover, must not start from the same one.
	s.limit = st.limit
	srv.urgeCheckpoint()
	if st.location != "" {
		s.binding.Restore(st.location, st.lifetime)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cids = st.cids
	for _, u := range st.ups {
		addr, ok := srv.backends[u.name]
		if !ok {
			continue
		}
		up := &upstream{s: s, name: u.name}
		sock, local, err := srv.pollers[s.loop].dial(up, u.local.Addr(), u.local.Port(), addr)
		if err != nil {
			srv.log.Warn("upstream port taken: the backend sees a new device address until the device's next Update",
				zap.String("backend", u.name), zap.Stringer("port", u.local), zap.Error(err))
			sock, local, err = srv.pollers[s.loop].dial(up, srv.upstreamSource(s), 0, addr)
			if err != nil {
				for _, up := range s.ups {
					up.close()
				}
				return nil, err
			}
		}
		up.sock, up.local = sock, local
		s.ups = append(s.ups, up)
	}
	return s, nil
}
