package gateway

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/lwm2m-gateway/gateway/lwm2m"
	"github.com/pion/dtls/v4"
	"go.uber.org/zap"
)

// run drives the session: handshake, policy (inside the handshake),
// establishment, then the device→backend direction until the session ends.
func (s *session) run(conn *dtls.Conn) {
	srv := s.srv
	defer srv.wg.Done()
	ctx, cancel := context.WithTimeout(srv.ctx, srv.cfg.HandshakeTimeout)
	err := conn.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.handshakeFailed(err)
		return
	}
	if err := s.establish(conn); err != nil {
		s.close("establishment failed")
		if !errors.Is(err, net.ErrClosed) {
			srv.log.Error("cannot establish session", zap.String("identity_tag", s.identityTag()), zap.Error(err))
		}
		return
	}
	s.fromDevice(conn)
}

func (s *session) handshakeFailed(err error) {
	s.mu.Lock()
	reason := s.failure
	s.mu.Unlock()
	switch {
	case reason != "":
	case errors.Is(err, context.DeadlineExceeded):
		reason = "timeout"
	case errors.Is(err, context.Canceled), errors.Is(err, net.ErrClosed):
		reason = "closed"
	default:
		// A wrong key shows up as a binder or Finished mismatch; pion
		// does not tell it apart from other protocol errors in a stable way.
		reason = "bad_key_or_protocol"
	}
	s.srv.stats.handshakeFailed(reason)
	fields := []zap.Field{zap.Stringer("remote", s.srv.table.peerAddr(s)), zap.String("reason", reason), zap.Error(err)}
	if tag := s.identityTag(); tag != "" {
		fields = append(fields, zap.String("identity_tag", tag))
	}
	s.srv.warn.Warn("handshake failed", fields...)
	s.close("handshake failed")
}

// establish picks the identity's backend, enforces one session per identity
// and arms the idle timer; the upstream socket opens with the device's first
// datagram (route).
func (s *session) establish(conn *dtls.Conn) error {
	srv := s.srv
	s.mu.Lock()
	key, pskOnly := s.key, s.pskOnly
	s.mu.Unlock()
	state, _ := conn.ConnectionState()
	name := s.backendFor(key, state.ServerName)
	s.binding = lwm2m.NewBinding(key.Endpoint)
	s.backend = name
	if _, ok := srv.cfg.Backends[name]; !ok {
		return ErrNoBackend
	}
	// The upstream socket opens with the device's first datagram (route):
	// a handshake costs no socket, and a device that never speaks holds none.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.established = true
	s.mu.Unlock()
	if !srv.cfg.AllowParallelSessions {
		if old := srv.table.claimIdentity(s, key.Identity); old != nil {
			old.close("replaced by a new session of the same identity")
		}
	}
	s.lmu.Lock()
	if !s.isClosed() {
		s.idle = time.AfterFunc(s.firstCheck(), s.checkIdle)
	}
	s.lmu.Unlock()
	mode := "psk_dhe_ke"
	if pskOnly {
		mode = "psk_ke"
	}
	if state.NegotiatedVersion() == versionDTLS12 {
		mode = "psk"
		if ecdhePSK(state.CipherSuiteID) {
			mode = "ecdhe_psk"
		}
	}
	srv.stats.handshakeOK(versionName(state.NegotiatedVersion()), mode)
	fields := []zap.Field{
		zap.Stringer("remote", srv.table.peerAddr(s)),
		zap.String("identity_tag", s.identityTag()),
		zap.String("version", versionName(state.NegotiatedVersion())),
		zap.String("suite", state.CipherSuiteID.String()),
		zap.String("mode", mode),
		zap.String("backend", name),
	}
	if srv.cfg.LogIdentities {
		fields = append(fields, zap.ByteString("identity", key.Identity))
	}
	srv.log.Info("session established", fields...)
	return nil
}

// fromDevice forwards decrypted datagrams from conn to the backend, byte for
// byte (L4), after the LwM2M binding checks (L1, L2). It ends quietly when
// conn was parked (or replaced by a resumed one) under it.
func (s *session) fromDevice(conn *dtls.Conn) {
	buf := make([]byte, s.srv.cfg.MaxDatagram)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if !s.isCurrent(conn) {
				return // parked: the Conn was exported, the session lives on
			}
			s.close(closeReason(err, "device closed the session"))
			return
		}
		s.touch()
		up := s.admit(conn, buf[:n])
		if up == nil {
			continue
		}
		s.srv.stats.toBackend(up.name, n)
		if _, err := up.conn.Write(buf[:n]); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.srv.stats.upstreamErrors.Add(1)
			s.srv.warn.Warn("write to backend", zap.String("identity_tag", s.identityTag()), zap.String("backend", up.name), zap.Error(err))
		}
	}
}

// fromBackend forwards one backend's datagrams to this session's device
// only (L3: the socket is connected and owned by one session).
func (s *session) fromBackend(up *upstream) {
	defer s.srv.wg.Done()
	buf := make([]byte, s.srv.cfg.MaxDatagram)
	for {
		n, err := up.conn.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				// The backend's port was closed when we last wrote; a
				// restarted backend must still reach the device.
				s.srv.stats.upstreamErrors.Add(1)
				continue
			}
			return
		}
		s.touch()
		ended := s.learn(buf[:n], up)
		s.srv.stats.toDevice(up.name, n)
		if err := s.writeDevice(buf[:n]); err != nil {
			s.close(closeReason(err, "write to device failed"))
			return
		}
		if ended {
			// De-registered (2.02) or forgotten by the backend (4.04):
			// the answer is on its way, the socket has no more use.
			s.srv.log.Info("registration ended, upstream socket closed",
				zap.String("identity_tag", s.identityTag()), zap.String("backend", up.name))
			s.dropUpstream(up)
			return
		}
	}
}

// checkIdle closes the session after its idle limit without traffic, parks
// it after ParkAfter without traffic, or re-arms. A registered device may
// stay silent for its whole LwM2M lifetime (queue mode), so its limit is the
// larger of IdleTimeout and lifetime plus RegistrationGrace. Parked sessions
// keep their timer: the limit applies to them too.
func (s *session) checkIdle() {
	idle := time.Since(time.Unix(0, s.lastActive.Load()))
	limit := s.idleLimit()
	if idle >= limit {
		s.close("idle timeout")
		return
	}
	next := limit - idle
	pa := s.srv.cfg.ParkAfter
	if pa > 0 && idle >= pa {
		// errParkBusy (a datagram is queued) retries below.
		if err := s.park(); err != nil && !errors.Is(err, errParkBusy) {
			if !errors.Is(err, net.ErrClosed) {
				s.srv.log.Error("cannot park session", zap.String("identity_tag", s.identityTag()), zap.Error(err))
				s.close("park failed")
			}
			return
		}
	}
	s.lmu.Lock()
	if !s.isClosed() {
		if pa > 0 && s.parked == nil {
			// Active (not parked, or resumed meanwhile): check again
			// when it may be parked.
			next = min(next, max(pa-time.Since(time.Unix(0, s.lastActive.Load())), pa/4))
		}
		s.idle.Reset(next)
	}
	s.lmu.Unlock()
}

// firstCheck is when the idle timer first fires after establishment.
func (s *session) firstCheck() time.Duration {
	if pa := s.srv.cfg.ParkAfter; pa > 0 && pa < s.srv.cfg.IdleTimeout {
		return pa
	}
	return s.srv.cfg.IdleTimeout
}

func (s *session) idleLimit() time.Duration {
	limit := s.srv.cfg.IdleTimeout
	s.bmu.Lock()
	_, lifetime, ok := s.binding.Registered()
	s.bmu.Unlock()
	if ok && lifetime+s.srv.cfg.RegistrationGrace > limit {
		limit = lifetime + s.srv.cfg.RegistrationGrace
	}
	return limit
}

// close ends the session once: close_notify to an established peer, upstream
// socket closed, every route removed. A parked session has no Conn, so its
// peer gets no close_notify: its next record meets an unknown CID (or, by
// address, is not a ClientHello) and is dropped, and the device handshakes
// again, as after a gateway restart.
func (s *session) close(reason string) {
	s.closeOnce.Do(func() {
		srv := s.srv
		srv.table.remove(s)
		s.lmu.Lock()
		s.mu.Lock()
		s.closed = true
		ups, established := s.ups, s.established
		s.mu.Unlock()
		conn, pc, parked := s.conn, s.pc, s.parked != nil
		s.conn, s.pc, s.parked = nil, nil, nil
		if s.idle != nil {
			s.idle.Stop()
		}
		s.lmu.Unlock()
		if parked {
			srv.stats.unparked()
		}
		if conn != nil {
			_ = conn.Close() // sends close_notify once established
		}
		if pc != nil {
			_ = pc.Close()
		}
		for _, up := range ups {
			_ = up.conn.Close()
		}
		if established {
			srv.stats.sessionClosed()
			srv.log.Info("session closed", zap.String("identity_tag", s.identityTag()), zap.String("reason", reason))
		}
		close(s.done)
	})
}

func closeReason(err error, fallback string) string {
	if errors.Is(err, dtls.ErrConnClosed) || errors.Is(err, net.ErrClosed) {
		return "closed"
	}
	return fallback + ": " + err.Error()
}
