package gateway

import (
	"sort"
	"time"
)

// SessionInfo describes one established session for an admin view. It
// carries the identity only as its keyed tag (R9) and nothing secret.
type SessionInfo struct {
	IdentityTag string
	Endpoint    string
	Remote      string // the device's current address
	Version     string // "dtls1.2", "dtls1.3"
	Suite       string
	Mode        string        // psk_dhe_ke, psk_ke, ecdhe_psk, psk
	DataPlane   string        // lean, pion
	Restored    bool          // continued from a snapshot (restart, takeover)
	Relayed     bool          // the device's records reach it through another replica
	Age         time.Duration // since the handshake
	IdleFor     time.Duration // since the last datagram either way
	Upstreams   int           // open backend sockets
}

// Sessions lists the established sessions, by identity tag.
func (srv *Server) Sessions() []SessionInfo {
	now := time.Now()
	out := []SessionInfo{}
	for _, s := range srv.table.snapshot() {
		s.mu.Lock()
		info := SessionInfo{
			IdentityTag: srv.tag(s.identity), Endpoint: s.endpoint, Remote: s.peer.String(),
			Version: versionName(s.params.version), Suite: s.params.suite.String(), Mode: s.params.mode(),
			DataPlane: DataPlaneLean.String(), Restored: s.restored, Relayed: s.via.IsValid(),
			Age: now.Sub(s.established), Upstreams: len(s.ups),
		}
		if s.pion != nil {
			info.DataPlane = DataPlanePion.String()
		}
		s.mu.Unlock()
		info.IdleFor = s.idleFor(now)
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IdentityTag < out[j].IdentityTag })
	return out
}

// Ready reports whether Serve has finished starting: saved registrations
// loaded, sessions restored from their snapshots, read loops running. A
// readiness probe waits for it, so a restarted replica takes traffic only
// once it can continue its sessions.
func (srv *Server) Ready() bool { return srv.ready.Load() }
