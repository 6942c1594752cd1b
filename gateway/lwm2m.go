package gateway

import (
	"github.com/lwm2m-gateway/gateway/lwm2m"
	"go.uber.org/zap"
)

// admit applies the LwM2M binding rules to a datagram from the device and
// reports whether it may go to the backend. A Register or Bootstrap-Request
// for another endpoint (L1) or an Update/De-register of a registration this
// session did not create (L2) is answered by the gateway itself (4.03, or
// 4.00 without ep) and never forwarded; a datagram that is not CoAP is
// dropped. Everything else passes unchanged (L4).
func (s *session) admit(p []byte) bool {
	m, _ := s.srv.inspector.Inspect(p) // FromDevice refuses what Inspect flagged
	s.bmu.Lock()
	v := s.binding.FromDevice(m)
	s.bmu.Unlock()
	if v.Action == lwm2m.Forward {
		return true
	}
	s.srv.stats.refused(v.Rule)
	fields := []zap.Field{zap.String("identity_tag", s.identityTag()), zap.String("rule", v.Rule),
		zap.Stringer("kind", m.Kind), zap.Stringer("action", v.Action)}
	if v.Action == lwm2m.Reject {
		fields = append(fields, zap.Stringer("code", v.Code))
		if reply, err := lwm2m.Reply(m, v.Code); err == nil {
			if _, err := s.conn.Write(reply); err != nil {
				fields = append(fields, zap.NamedError("reply_err", err))
			}
		}
	}
	s.srv.warn.Warn("request refused", fields...)
	return false
}

// learn lets the binding see what the backend sends (the Location of the
// 2.01 that answers this session's Register, the 2.02 of its De-register).
// Backend datagrams are always forwarded (L3, L4).
func (s *session) learn(p []byte) {
	m, err := s.srv.inspector.Inspect(p)
	if err != nil {
		return
	}
	s.bmu.Lock()
	s.binding.FromBackend(m)
	s.bmu.Unlock()
}
