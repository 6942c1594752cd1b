package gateway

import (
	"net/netip"
	"sync"
)

type addrKey struct {
	l  *listener
	ap netip.AddrPort
}

// table routes datagrams to established sessions and to handshakes in
// progress, and indexes sessions by identity (one session per identity,
// revocation R10).
//
// An address may have both an established session and a handshake: a
// device that reboots, or re-handshakes after a NAT-timeout heuristic,
// starts a new handshake from the address of its live session (RFC 6347
// §4.2.8, RFC 9147 §5.11). The handshake lives beside the session until it
// completes; only then does the address move to the new session, so a
// spoofed ClientHello cannot take a live session's address away.
//
// Reads take the read lock; routes change only on handshakes, closes and
// authenticated address moves, never per datagram. Lock order: session.mu
// before table.mu; the table never calls into a session while locked.
type table struct {
	mu       sync.RWMutex
	sessions map[addrKey]*session   // established, by device address
	pending  map[addrKey]*handshake // handshakes in progress, by address
	cids     map[string]cidRoute    // Connection IDs the gateway issued
	ids      map[string]*session    // identity -> newest established session
	all      map[*session]struct{}
}

// cidRoute is where records carrying one of the gateway's Connection IDs go:
// the handshake that issued it, then the session it became.
type cidRoute struct {
	s *session
	h *handshake
}

func newTable() *table {
	return &table{
		sessions: make(map[addrKey]*session),
		pending:  make(map[addrKey]*handshake),
		cids:     make(map[string]cidRoute),
		ids:      make(map[string]*session),
		all:      make(map[*session]struct{}),
	}
}

// lookup returns the session and the handshake routed from an address.
func (t *table) lookup(l *listener, ap netip.AddrPort) (*session, *handshake) {
	k := addrKey{l, ap}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.sessions[k], t.pending[k]
}

func (t *table) byCID(cid []byte) cidRoute {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.cids[string(cid)]
}

// addPending routes an address to a new handshake; it reports false when
// the address already has one.
func (t *table) addPending(h *handshake) bool {
	k := addrKey{h.l, h.peer}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending[k] != nil {
		return false
	}
	t.pending[k] = h
	return true
}

// addHandshakeCID routes a Connection ID the handshake issued.
func (t *table) addHandshakeCID(h *handshake, cid []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cids[string(cid)] = cidRoute{h: h}
}

// removePending forgets a handshake that did not become a session.
func (t *table) removePending(h *handshake, cids [][]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if k := (addrKey{h.l, h.peer}); t.pending[k] == h {
		delete(t.pending, k)
	}
	for _, c := range cids {
		if t.cids[string(c)].h == h {
			delete(t.cids, string(c))
		}
	}
}

// promote turns a completed handshake into the established session s: its
// Connection IDs and its address now route to s, and s becomes its
// identity's current session unless parallel sessions are allowed. It
// returns the sessions s replaces (same identity) and the session whose
// address route s took over (another identity at the same address, kept
// reachable by its CIDs only). The caller closes them, outside the lock.
func (t *table) promote(h *handshake, s *session, cids [][]byte, parallel bool) (replaced []*session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if k := (addrKey{h.l, h.peer}); t.pending[k] == h {
		delete(t.pending, k)
	}
	for _, c := range cids {
		t.cids[string(c)] = cidRoute{s: s}
	}
	t.sessions[addrKey{s.l, s.peer}] = s
	t.all[s] = struct{}{}
	id := string(s.identity)
	if old := t.ids[id]; old != nil && old != s && !parallel {
		replaced = append(replaced, old)
	}
	t.ids[id] = s
	return replaced
}

// addRestored routes a session restored from a snapshot.
func (t *table) addRestored(s *session, cids [][]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range cids {
		t.cids[string(c)] = cidRoute{s: s}
	}
	t.sessions[addrKey{s.l, s.peer}] = s
	t.all[s] = struct{}{}
	t.ids[string(s.identity)] = s
}

// moveAddr points the address route of s at to, after the record layer
// authenticated a record from there newer than any before (RFC 9146 §6,
// RFC 9147 §9). Called with s.mu held.
func (t *table) moveAddr(s *session, from, to netip.AddrPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, live := t.all[s]; !live {
		return
	}
	if k := (addrKey{s.l, from}); t.sessions[k] == s {
		delete(t.sessions, k)
	}
	t.sessions[addrKey{s.l, to}] = s
}

// remove forgets every route to s. Called with s.mu held (s.peer and
// s.cids are stable).
func (t *table) remove(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.all, s)
	if k := (addrKey{s.l, s.peer}); t.sessions[k] == s {
		delete(t.sessions, k)
	}
	for _, c := range s.cids {
		if t.cids[string(c)].s == s {
			delete(t.cids, string(c))
		}
	}
	if id := string(s.identity); t.ids[id] == s {
		delete(t.ids, id)
	}
}

// withIdentity returns every live session of an identity.
func (t *table) withIdentity(identity []byte) []*session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []*session
	for s := range t.all {
		if string(s.identity) == string(identity) {
			out = append(out, s)
		}
	}
	return out
}

// snapshot returns the established sessions.
func (t *table) snapshot() []*session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*session, 0, len(t.all))
	for s := range t.all {
		out = append(out, s)
	}
	return out
}

// pendingHandshakes returns the handshakes in progress.
func (t *table) pendingHandshakes() []*handshake {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*handshake, 0, len(t.pending))
	for _, h := range t.pending {
		out = append(out, h)
	}
	return out
}

// counts returns the number of established sessions and of handshakes.
func (t *table) counts() (established, handshaking int) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.all), len(t.pending)
}
