package gateway

import (
	"bytes"
	"net/netip"
	"sync"
)

type addrKey struct {
	l  *listener
	ap netip.AddrPort
}

// table indexes live sessions by address, by Connection ID and by identity.
// Every session is reachable from the first two so a datagram finds it; the
// identity index enforces one session per identity and revocation (R10).
// The keys are plain values so a parked session (DESIGN §1) can stay in the
// table as serialized state.
type table struct {
	mu    sync.RWMutex
	addrs map[addrKey]*session
	cids  map[string]*session
	ids   map[string]*session // identity -> newest established session
	all   map[*session]struct{}
}

func newTable() *table {
	return &table{
		addrs: make(map[addrKey]*session),
		cids:  make(map[string]*session),
		ids:   make(map[string]*session),
		all:   make(map[*session]struct{}),
	}
}

func (t *table) byAddr(l *listener, ap netip.AddrPort) *session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.addrs[addrKey{l, ap}]
}

func (t *table) byCID(cid []byte) *session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.cids[string(cid)]
}

// add registers a new session under its first address.
func (t *table) add(s *session, ap netip.AddrPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addrs[addrKey{s.l, ap}] = s
	s.routeAddr = ap
	t.all[s] = struct{}{}
}

// addCID registers a Connection ID the session issued.
func (t *table) addCID(s *session, cid []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cids[string(cid)] = s
	s.cids = append(s.cids, append([]byte(nil), cid...))
}

// moveAddr points the session's address route at its new peer address.
// It reports the previous address.
func (t *table) moveAddr(s *session, to netip.AddrPort) (from netip.AddrPort, moved bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	from = s.routeAddr
	if from == to {
		return from, false
	}
	if _, live := t.all[s]; !live {
		return from, false
	}
	if t.addrs[addrKey{s.l, from}] == s {
		delete(t.addrs, addrKey{s.l, from})
	}
	t.addrs[addrKey{s.l, to}] = s
	s.routeAddr = to
	return from, true
}

// peerAddr is the address the session's datagrams are routed from.
func (t *table) peerAddr(s *session) netip.AddrPort {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return s.routeAddr
}

// claimIdentity makes s the identity's current session and returns the
// session it replaces, if any.
func (t *table) claimIdentity(s *session, identity []byte) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.ids[string(identity)]
	t.ids[string(identity)] = s
	if old == s {
		return nil
	}
	return old
}

// withIdentity returns every live session of an identity.
func (t *table) withIdentity(identity []byte) []*session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []*session
	for s := range t.all {
		if id := s.identity(); id != nil && bytes.Equal(id, identity) {
			out = append(out, s)
		}
	}
	return out
}

// remove forgets every route to s.
func (t *table) remove(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.all, s)
	if t.addrs[addrKey{s.l, s.routeAddr}] == s {
		delete(t.addrs, addrKey{s.l, s.routeAddr})
	}
	for _, cid := range s.cidList() {
		if t.cids[string(cid)] == s {
			delete(t.cids, string(cid))
		}
	}
	if id := s.identity(); id != nil && t.ids[string(id)] == s {
		delete(t.ids, string(id))
	}
}

func (t *table) snapshot() []*session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*session, 0, len(t.all))
	for s := range t.all {
		out = append(out, s)
	}
	return out
}

func (t *table) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.all)
}
