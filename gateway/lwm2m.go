package gateway

import (
	"github.com/lwm2m-gateway/gateway/lwm2m"
	"github.com/pion/dtls/v4"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"go.uber.org/zap"
)

// admit applies the LwM2M binding rules to a datagram from the device and
// reports whether it may go to the backend. A Register or Bootstrap-Request
// for another endpoint (L1) or an Update/De-register of a registration this
// session did not create (L2) is answered by the gateway itself (4.03, or
// 4.00 without ep) and never forwarded; a datagram that is not CoAP is
// dropped. Everything else passes unchanged (L4). It returns the backend
// the datagram goes to, or nil.
func (s *session) admit(conn *dtls.Conn, p []byte) *upstream {
	m, _ := s.srv.inspector.Inspect(p) // FromDevice refuses what Inspect flagged
	s.bmu.Lock()
	v := s.binding.FromDevice(m)
	if v.Action == lwm2m.Forward && (m.Kind == lwm2m.Register || m.Kind == lwm2m.BootstrapRequest) && !s.registers.Allow() {
		// A device re-registers rarely; a flood of Registers from one
		// session is a bug or an attack on the backend (RFC 8516).
		v = lwm2m.Verdict{Action: lwm2m.Reject, Code: codes.TooManyRequests, Rule: "rate"}
	}
	var up *upstream
	var err error
	if v.Action == lwm2m.Forward {
		up, err = s.route(m)
	}
	s.bmu.Unlock()
	if v.Action == lwm2m.Forward {
		if err != nil {
			s.srv.stats.upstreamErrors.Add(1)
			s.srv.warn.Warn("cannot reach backend", zap.String("identity_tag", s.identityTag()), zap.Error(err))
			return nil
		}
		return up
	}
	s.srv.stats.refused(v.Rule)
	fields := []zap.Field{zap.String("identity_tag", s.identityTag()), zap.String("rule", v.Rule),
		zap.Stringer("kind", m.Kind), zap.Stringer("action", v.Action)}
	if v.Action == lwm2m.Reject {
		fields = append(fields, zap.Stringer("code", v.Code))
		if reply, err := lwm2m.Reply(m, v.Code); err == nil {
			if _, err := conn.Write(reply); err != nil {
				fields = append(fields, zap.NamedError("reply_err", err))
			}
		}
	}
	s.srv.warn.Warn("request refused", fields...)
	return nil
}

// learn lets the binding see what the backend sends (the Location of the
// 2.01 that answers this session's Register, the 2.02 of its De-register).
// Backend datagrams are always forwarded (L3, L4). Requests are remembered
// so the device's answers go back to the backend that asked. It reports
// whether this datagram ended the registration.
func (s *session) learn(p []byte, from *upstream) (ended bool) {
	m, err := s.srv.inspector.Inspect(p)
	if err != nil {
		return false
	}
	s.bmu.Lock()
	if m.Kind.IsRequest() {
		s.origins.record(m, from)
	}
	_, _, wasRegistered := s.binding.Registered()
	s.binding.FromBackend(m)
	_, _, registered := s.binding.Registered()
	s.bmu.Unlock()
	return wasRegistered && !registered
}
