package gateway

import (
	"time"

	"github.com/lwm2m-gateway/gateway/lwm2m"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"go.uber.org/zap"
)

// admitLocked applies the LwM2M binding rules to a payload from the device
// and returns the upstream it goes to, or the gateway's own answer:
//
//   - L1: a Register or Bootstrap-Request for another endpoint is answered
//     4.03 (4.00 without ep) and never forwarded.
//   - L2: an Update or De-register of a location this identity did not
//     create is never forwarded: 4.03 when the location is another
//     identity's, 4.04 Not Found when the gateway knows no registration
//     there (a LwM2M client re-registers on 4.04; on 4.03 it gives up).
//   - A Register flood from one session gets 4.29 (RFC 8516).
//   - While the backend is unreachable (ICMP port unreachable on the
//     upstream socket), a confirmable request is answered 5.03 with a
//     Max-Age instead of being forwarded into the void (issue 9.8).
//   - Everything else passes unchanged (L4); a datagram that is not CoAP is
//     dropped.
//
// Called with s.mu held.
func (s *session) admitLocked(p []byte) (up *upstream, reply []byte) {
	srv := s.srv
	m, _ := srv.inspector.Inspect(p) // FromDevice refuses what Inspect flagged
	v := s.binding.FromDevice(m)
	if v.Action == lwm2m.Forward && (m.Kind == lwm2m.Register || m.Kind == lwm2m.BootstrapRequest) && !s.registers.Allow() {
		// A device re-registers rarely; a flood of Registers from one
		// session is a bug or an attack on the backend (RFC 8516).
		v = lwm2m.Verdict{Action: lwm2m.Reject, Code: codes.TooManyRequests, Rule: "rate"}
	}
	if v.Action == lwm2m.Forward {
		up, err := s.routeLocked(m)
		if err != nil {
			srv.stats.upstreamErrors.Add(1)
			srv.sampled.Warn("cannot reach backend", zap.String("identity_tag", srv.tag(s.identity)), zap.Error(err))
			return nil, nil
		}
		if up.isDown(time.Now()) && m.Kind.IsRequest() && m.Type == message.Confirmable {
			srv.stats.refused("backend_down")
			srv.sampled.Warn("backend unreachable, request answered 5.03",
				zap.String("identity_tag", srv.tag(s.identity)), zap.String("backend", up.name))
			reply, err := lwm2m.ReplyRetryAfter(m, uint32(srv.cfg.BackendRetryAfter/time.Second))
			if err != nil {
				return nil, nil
			}
			return nil, reply
		}
		return up, nil
	}
	if v.Rule == "L2" && v.Code == codes.Forbidden && !srv.regs.ownedByOther(m.Path, s.identity) {
		v.Code = codes.NotFound
	}
	srv.stats.refused(v.Rule)
	fields := []zap.Field{zap.String("identity_tag", srv.tag(s.identity)), zap.String("rule", v.Rule),
		zap.Stringer("kind", m.Kind), zap.Stringer("action", v.Action)}
	if v.Action == lwm2m.Reject {
		fields = append(fields, zap.Stringer("code", v.Code))
		reply, _ = lwm2m.Reply(m, v.Code)
	}
	srv.sampled.Warn("request refused", fields...)
	return nil, reply
}

// learnLocked lets the binding see what the backend sends (the Location of
// the 2.01 that answers this session's Register, the 2.02 of its
// De-register) and keeps the identity's registration in step (registry.go).
// Backend datagrams are always forwarded (L3, L4). Requests are remembered
// so the device's answers go back to the backend that asked, when there is
// more than one. It reports whether this datagram ended the registration.
// Called with s.mu held.
func (s *session) learnLocked(p []byte, from *upstream) (ended bool) {
	m, err := s.srv.inspector.Inspect(p)
	if err != nil {
		return false
	}
	if m.Kind.IsRequest() && (len(s.ups) > 1 || from.name != s.backend) {
		s.origins.record(m, from)
	}
	wasLoc, wasLT, wasRegistered := s.binding.Registered()
	s.binding.FromBackend(m)
	loc, lt, registered := s.binding.Registered()
	switch {
	case registered && (loc != wasLoc || lt != wasLT):
		s.srv.regs.put(s.identity, s.endpoint, loc, lt)
	case wasRegistered && !registered:
		s.srv.regs.forget(s.identity, wasLoc)
	}
	return wasRegistered && !registered
}
