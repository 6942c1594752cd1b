package gateway

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/lwm2m-gateway/gateway/lwm2m"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// establish turns a completed handshake into an established session: the
// hand-over from pion to the gateway (DESIGN §1).
//
// On the lean plane: pion is held (no more datagrams reach it), the one
// application record it may already have decrypted is read out, its state
// is exported (pion stops without close_notify) and the gateway's record
// layer takes over; datagrams that arrived meanwhile are replayed into the
// session, so the hand-over loses nothing. On the pion plane the Conn stays.
//
// Then the session takes its Connection IDs and its address over from the
// handshake, becomes its identity's current session, and the session it
// replaces (a reboot, a re-handshake from the same or another address) is
// closed — only now, so a spoofed ClientHello cannot end a live session.
func (srv *Server) establish(hs *handshake, dc *dtls.Conn) error {
	state, _ := dc.ConnectionState()
	hs.mu.Lock()
	key, pskOnly := hs.key, hs.pskOnly
	hs.mu.Unlock()
	params := sessionParams{version: state.NegotiatedVersion(), suite: state.CipherSuiteID, pskOnly: pskOnly,
		serverName: hs.hello.serverName, missingSNI: hs.l.missingSNI}
	if hs.hello.suites == nil {
		// A fragmented ClientHello was not inspected: check what pion
		// saw. The handshake is complete on pion's side, so the device
		// gets close_notify before any record is forwarded.
		params.serverName = state.ServerName
		if err := checkSession(key, params); err != nil {
			var pe *pskstore.PolicyError
			if errors.As(err, &pe) {
				hs.setFailure("policy_" + string(pe.Rule))
			}
			hs.fail(err)
			return nil
		}
	}
	backend := srv.backendFor(key, params.serverName, hs.l)
	if _, ok := srv.backends[backend]; !ok {
		return fmt.Errorf("backend %q: %w", backend, ErrNoBackend)
	}
	s := &session{
		srv: srv, l: hs.l, loop: hs.loop, id: newSessionID(), keyHash: hashKey(key.Secret),
		identity: key.Identity, endpoint: key.Endpoint, backend: backend,
		params: params, established: time.Now(),
		peer:      hs.peer,
		cids:      hs.cidList(),
		binding:   lwm2m.NewBinding(key.Endpoint),
		registers: rate.NewLimiter(rate.Every(srv.cfg.RegisterInterval), registerBurst),
	}
	if loc, lt, ok := srv.regs.get(key.Identity, key.Endpoint); ok {
		// The registration belongs to the identity, not to one DTLS
		// session: a device that re-handshakes keeps updating it (L2).
		s.binding.Restore(loc, lt)
	}
	s.touch()
	var early [][]byte
	if srv.cfg.DataPlane == DataPlaneLean {
		lastFlight := hs.conn.hold()
		var ended bool
		if early, ended = drainPion(dc, hs.conn); ended {
			return errEndedAtHandOver
		}
		exported, err := dc.ExportState()
		if err != nil {
			return fmt.Errorf("export state: %w", err)
		}
		hs.mu.Lock()
		keylog := hs.keylog
		hs.mu.Unlock()
		s.lean, err = newLeanPlane(srv, exported, keylog, lastFlight)
		if err != nil {
			return fmt.Errorf("hand-over: %w", err)
		}
	} else {
		s.pion = newPionPlane(s, dc, hs.conn)
	}
	if srv.closing.Load() {
		s.close("server closed", true)
		return ErrServerClosed
	}
	replaced := srv.table.promote(hs, s, s.cids, srv.cfg.AllowParallelSessions)
	var replay []datagram
	if s.lean != nil {
		// Datagrams routed to the handshake until now are in its queue;
		// from now on a delivery to the closed handshake falls through to
		// its successor (listener.route), so none is lost.
		hs.successor.Store(s)
		hs.conn.shut()
		replay = hs.conn.drain()
	}
	if !srv.keyStillValid(hs) {
		// Revoked or rotated while the handshake ran (R10): a revocation
		// after promote finds the session; one before it is caught here.
		s.close("identity revoked or rotated during the handshake", true)
		return nil
	}
	srv.admission.remember(hs.peer.Addr())
	srv.stats.handshakeOK(versionName(params.version), params.mode())
	fields := []zap.Field{
		zap.Stringer("remote", hs.peer),
		zap.String("identity_tag", srv.tag(key.Identity)),
		zap.String("version", versionName(params.version)),
		zap.String("suite", params.suite.String()),
		zap.String("mode", params.mode()),
		zap.String("backend", backend),
		zap.Stringer("data_plane", srv.cfg.DataPlane),
		zap.Bool("connection_id", len(s.cids) > 0),
	}
	if srv.cfg.LogIdentities {
		fields = append(fields, zap.ByteString("identity", key.Identity))
	}
	srv.log.Info("session established", fields...)
	for _, old := range replaced {
		// A device that rebooted or re-handshook from the same address
		// no longer has the old keys: no close_notify for it.
		old.close("replaced by a new session of the same identity", old.peerAddr() != hs.peer)
	}
	if s.pion != nil {
		s.pion.start()
		return nil
	}
	for _, payload := range early {
		s.mu.Lock()
		if reply := s.deviceDataLocked(payload); reply != nil {
			s.lean.send(s, reply)
		}
		s.mu.Unlock()
	}
	for _, d := range replay {
		s.fromWire(d.b, d.from)
	}
	return nil
}

// keyStillValid re-checks the handshake's key when a revocation or rotation
// happened since it was looked up (rare: otherwise it costs nothing).
func (srv *Server) keyStillValid(hs *handshake) bool {
	hs.mu.Lock()
	key, gen := hs.key, hs.keyGen
	hs.mu.Unlock()
	if srv.keyChanges.Load() == gen {
		return true
	}
	now, err := srv.lookupKey(key.Identity)
	return err == nil && subtle.ConstantTimeCompare(now.Secret, key.Secret) == 1
}

// drainPion reads the application records pion decrypted before it was
// held: a device may send data right behind its Finished. Once pion waits
// in a held read it has processed everything it read, so one more read
// that finds nothing means there is nothing left; pion hands out one
// record at a time, so the loop also unblocks a pion waiting to queue one.
// ended reports that pion's Conn ended instead (the device's close_notify
// or a fatal alert reached pion before the hold): there is no state left to
// hand over, and reading on would only spin until drainMax.
func drainPion(dc *dtls.Conn, conn *hsConn) (out [][]byte, ended bool) {
	buf := make([]byte, maxDrainRecord)
	give := time.Now().Add(drainMax)
	for {
		idle := conn.pionIdle()
		_ = dc.SetReadDeadline(time.Now().Add(drainWait))
		n, err := dc.Read(buf)
		if err == nil {
			out = append(out, append([]byte(nil), buf[:n]...))
			continue
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			return out, true
		}
		if idle || time.Now().After(give) {
			return out, false
		}
	}
}

// errEndedAtHandOver: the device ended the connection (close_notify, a
// fatal alert) between the end of its handshake and the hand-over.
var errEndedAtHandOver = errors.New("gateway: the device ended the connection at the hand-over")

const (
	// drainWait is how long one read waits for a record pion already
	// decrypted.
	drainWait = time.Millisecond
	// drainMax bounds the drain if pion never settles.
	drainMax = time.Second
	// maxDrainRecord is the largest record pion can hand out during the
	// hand-over (its handshake receive buffer).
	maxDrainRecord = 1 << 14
)

// peerAddr is the device's current address.
func (s *session) peerAddr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peer
}

// backendFor chooses the identity's backend: the one its key names, else
// the one its handshake's server name maps to, else the listener's, else
// the gateway's default.
func (srv *Server) backendFor(key pskstore.Key, serverName string, l *listener) string {
	if key.Backend != "" {
		return key.Backend
	}
	for sni, name := range srv.cfg.ServerNameBackends {
		if serverName != "" && strings.EqualFold(sni, serverName) {
			return name
		}
	}
	if l.backend != "" {
		return l.backend
	}
	return srv.cfg.DefaultBackend
}
