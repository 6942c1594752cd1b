package gateway

import (
	"errors"
	"net"
	"net/netip"

	"github.com/pion/dtls/v4"
	"go.uber.org/zap"
)

// Parking (DESIGN §1, sleeping devices). An established session without
// traffic in either direction for Config.ParkAfter is parked: its *dtls.Conn
// is exported (dtls.Conn.ExportState, which stops pion's goroutines without
// close_notify) and serialized (State.MarshalBinary); the Conn, its
// sessionConn, its queue and the device→backend goroutine are dropped. The
// session keeps its routes (address, Connection IDs, identity), its LwM2M
// binding and its upstream sockets, so the backend keeps seeing the same
// address and can still reach the device.
//
// The next datagram from the device (listener.route, by CID or address) or
// from a backend for the device (fromBackend) resumes it: dtls.Resume over a
// fresh sessionConn, a new device→backend goroutine, then the datagram. A
// serialized state is resumed at most once: park, resume and close all run
// under session.lmu, and resume consumes s.parked before calling pion.
//
// Replayed records are harmless: pion restores the replay cutoff with the
// state, so a record from before the park is dropped after the resume it
// caused; the session, resumed for nothing, parks again after ParkAfter.
//
// Costs and limits: a datagram the device sends while the session is being
// parked may be lost (CoAP retransmits it); a session whose inbound queue is
// not empty is not parked yet. Closing a parked session sends no
// close_notify, since there is no Conn to send it.

// errParkBusy: a datagram waits in the session's queue; try again later.
var errParkBusy = errors.New("gateway: session busy, not parked")

// park exports and serializes the session's Conn. It returns net.ErrClosed
// for a closed session and nil for one already parked.
func (s *session) park() error {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.isClosed() || (s.conn == nil && s.parked == nil) {
		return net.ErrClosed
	}
	if s.parked != nil {
		return nil
	}
	if !s.isEstablishedOpen() {
		return errParkBusy
	}
	if len(s.pc.in) > 0 {
		return errParkBusy
	}
	conn, pc := s.conn, s.pc
	// Cleared first: the device→backend goroutine sees its Conn end and,
	// finding it no longer current, exits without closing the session.
	s.conn, s.pc = nil, nil
	state, err := conn.ExportState()
	_ = pc.Close()
	if err != nil {
		_ = conn.Close()
		return err
	}
	b, err := state.MarshalBinary()
	if err != nil {
		return err
	}
	s.parked = b
	s.srv.stats.parked()
	s.srv.log.Debug("session parked", zap.String("identity_tag", s.identityTag()), zap.Int("state_bytes", len(b)))
	return nil
}

// resumeLocked turns the parked state back into a Conn over a fresh
// sessionConn and restarts the device→backend goroutine. The state is
// consumed whatever happens: on error the caller closes the session.
// Called with lmu held and s.parked set.
func (s *session) resumeLocked() error {
	srv := s.srv
	b := s.parked
	s.parked = nil
	srv.stats.unparked()
	var st dtls.State
	if err := st.UnmarshalBinary(b); err != nil {
		return err
	}
	pc := newSessionConn(s.l, s.followPeer)
	// The last authenticated peer address; pion moves it on a newer
	// authenticated CID record from elsewhere, as before the park.
	peer := net.UDPAddrFromAddrPort(srv.table.peerAddr(s))
	conn, err := dtls.Resume(&st, pc, peer, srv.resumeOptions(s)...)
	if err != nil {
		_ = pc.Close()
		return err
	}
	s.pc, s.conn = pc, conn
	srv.stats.resumes.Add(1)
	if s.idle != nil && srv.cfg.ParkAfter > 0 {
		s.idle.Reset(srv.cfg.ParkAfter)
	}
	srv.wg.Add(1)
	go func() {
		defer srv.wg.Done()
		s.fromDevice(conn)
	}()
	return nil
}

// resumeOptions are the pion options a resumed server Conn needs: the same
// Connection ID generator, length and migration policy, MTU, receive buffer
// and logger as the handshake had (serverOptions). Versions come from the
// state.
func (srv *Server) resumeOptions(s *session) []dtls.Option {
	cfg := &srv.cfg
	opts := []dtls.Option{
		dtls.WithPSK(nil, s.selectPSK, dtls.WithPSKIdentityLimit(8)),
		dtls.WithCipherSuites(cfg.CipherSuites...),
		dtls.WithEllipticCurves(cfg.Groups...),
		dtls.WithMTU(cfg.MTU),
		dtls.WithReceiveBufferSize(cfg.MaxDatagram),
		dtls.WithVerifyConnection(s.verify),
		dtls.WithLoggerFactory(srv.pionLog),
	}
	if cfg.CIDLength > 0 {
		opts = append(opts, dtls.WithConnectionID(s.newCID, dtls.CIDPathMigrationUnsafe))
	}
	return opts
}

// deliver hands a datagram from the device to the session, resuming it
// first if parked. It reports false when the datagram was dropped.
func (s *session) deliver(p []byte, from netip.AddrPort) bool {
	s.lmu.Lock()
	if s.parked != nil {
		if err := s.resumeLocked(); err != nil {
			s.lmu.Unlock()
			s.resumeFailed(err)
			return false
		}
	}
	pc := s.pc
	ok := pc != nil && pc.deliver(p, from)
	s.lmu.Unlock()
	return ok
}

// writeDevice sends a backend's datagram to the device, resuming the
// session first if parked. The write runs outside lmu (pion may block in
// it, and the listener's read loop takes lmu to deliver); if the session was
// parked under it, it resumes and tries again.
func (s *session) writeDevice(p []byte) error {
	for attempt := 0; ; attempt++ {
		conn, err := s.activeConn()
		if err != nil {
			return err
		}
		_, err = conn.Write(p)
		if err == nil || attempt == 2 || s.isCurrent(conn) || s.isClosed() {
			return err
		}
	}
}

// activeConn returns the session's Conn, resuming the session if parked.
func (s *session) activeConn() (*dtls.Conn, error) {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.parked != nil {
		if err := s.resumeLocked(); err != nil {
			s.srv.stats.resumeFailures.Add(1)
			s.srv.log.Error("cannot resume parked session", zap.String("identity_tag", s.identityTag()), zap.Error(err))
			return nil, err
		}
	}
	if s.conn == nil {
		return nil, net.ErrClosed
	}
	return s.conn, nil
}

// resumeFailed closes a session whose state could not be resumed, off the
// listener's read loop (close waits for pion).
func (s *session) resumeFailed(err error) {
	s.srv.stats.resumeFailures.Add(1)
	s.srv.log.Error("cannot resume parked session", zap.String("identity_tag", s.identityTag()), zap.Error(err))
	go s.close("resume failed")
}

// isCurrent reports whether conn is still the session's Conn (not parked,
// not closed).
func (s *session) isCurrent(conn *dtls.Conn) bool {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	return s.conn == conn
}

// isParked reports whether the session is parked now.
func (s *session) isParked() bool {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	return s.parked != nil
}

func (s *session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *session) isEstablishedOpen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.established && !s.closed
}
