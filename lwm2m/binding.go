package lwm2m

import (
	"bytes"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Action is what the gateway does with a datagram from the device.
type Action uint8

const (
	// Forward passes the datagram on to the backend unchanged.
	Forward Action = iota
	// Reject forwards nothing; the gateway answers the request itself with
	// Reply(m, Verdict.Code).
	Reject
	// Drop forwards nothing and answers nothing: the datagram is not a
	// well-formed CoAP message (Inspect failed with ErrMalformed).
	Drop
)

func (a Action) String() string {
	switch a {
	case Forward:
		return "forward"
	case Reject:
		return "reject"
	case Drop:
		return "drop"
	}
	return "action(?)"
}

// Verdict is the decision on one datagram from the device.
type Verdict struct {
	Action Action
	// Code is the response the gateway sends for Reject: codes.Forbidden
	// or codes.BadRequest. Zero otherwise.
	Code codes.Code
	// Rule is the DESIGN.md §3 rule behind a Reject or Drop ("L1", "L2"),
	// or "CoAP" for a message Inspect refused; empty for Forward. It is a
	// constant, safe for metric labels.
	Rule string
}

var forward = Verdict{Action: Forward}

// Binding is the L1/L2 state of one session: the endpoint name bound to the
// session's PSK identity and the registration this session created.
//
// A Binding is not safe for concurrent use: calls must come from one
// goroutine at a time (the session serialises FromDevice and FromBackend,
// e.g. under the session's lock). It holds no references to datagrams, does
// no I/O and keeps no timers, so it can be parked with the session.
type Binding struct {
	endpoint string
	location string // "/rd/…" of the registration; "" when not registered
	lifetime time.Duration

	// Requests forwarded and not yet answered, matched by token.
	register, update, deregister pending
}

// pending is one forwarded request awaiting the backend's response.
type pending struct {
	token    [message.MaxTokenSize]byte
	n        uint8
	active   bool
	lifetime time.Duration // lt it asked for; zero if none
}

func (p *pending) set(token []byte, lifetime time.Duration) {
	p.n = uint8(copy(p.token[:], token))
	p.active, p.lifetime = true, lifetime
}

func (p *pending) matches(token []byte) bool {
	return p.active && bytes.Equal(p.token[:p.n], token)
}

// NewBinding returns the Binding of a session whose PSK identity is bound to
// endpoint (the LwM2M Endpoint Client Name), not yet registered.
func NewBinding(endpoint string) *Binding {
	return &Binding{endpoint: endpoint}
}

// Restore makes a new session's Binding continue a registration its
// identity created in an earlier session (a reboot, a re-handshake, a
// gateway restart): Update and De-register of location are then forwarded
// (L2). The registration location belongs to the identity, not to one DTLS
// session. A location that is not an "/rd/…" path is ignored.
func (b *Binding) Restore(location string, lifetime time.Duration) {
	if !strings.HasPrefix(location, "/rd/") {
		return
	}
	b.location, b.lifetime = location, lifetime
}

// Endpoint returns the endpoint name the session is bound to.
func (b *Binding) Endpoint() string { return b.endpoint }

// Registered returns the location ("/rd/5a3f") and lifetime of the
// registration this session created, learned from the backend's 2.01
// Created; ok is false when the session has no registration.
func (b *Binding) Registered() (location string, lifetime time.Duration, ok bool) {
	return b.location, b.lifetime, b.location != ""
}

// FromDevice decides on a message the device sent, as Inspect returned it:
//   - L1: a Register or Bootstrap-Request is forwarded only when its ep is
//     the bound endpoint: 4.00 Bad Request without ep, 4.03 Forbidden for
//     another ep. A Bootstrap-Finish (POST /bs without query) from a device
//     is a Bootstrap-Request without ep: 4.00. An ep on an Update must match
//     too.
//   - L2: an Update or De-register is forwarded only for the location this
//     session's Register created: 4.03 Forbidden otherwise, also before any
//     registration.
//   - A message Inspect refused: 4.00 for a request, Drop for the rest.
//   - L4: everything else is forwarded.
func (b *Binding) FromDevice(m Message) Verdict {
	if m.bad {
		if m.Kind.IsRequest() {
			return Verdict{Action: Reject, Code: codes.BadRequest, Rule: "CoAP"}
		}
		return Verdict{Action: Drop, Rule: "CoAP"}
	}
	switch m.Kind {
	case Invalid:
		return Verdict{Action: Drop, Rule: "CoAP"}
	case Register, BootstrapRequest:
		if v, ok := b.checkEndpoint(m.Params.Endpoint, true); !ok {
			return v
		}
		if m.Kind == Register {
			b.register.set(m.Token, m.Params.Lifetime)
		}
		return forward
	case BootstrapFinish:
		return Verdict{Action: Reject, Code: codes.BadRequest, Rule: "L1"}
	case Update, Deregister:
		if v, ok := b.checkEndpoint(m.Params.Endpoint, false); !ok {
			return v
		}
		if b.location == "" || m.Path != b.location {
			return Verdict{Action: Reject, Code: codes.Forbidden, Rule: "L2"}
		}
		if m.Kind == Update {
			b.update.set(m.Token, m.Params.Lifetime)
		} else {
			b.deregister.set(m.Token, 0)
		}
		return forward
	}
	return forward
}

// checkEndpoint applies L1 to the ep of a request; required says whether the
// request must carry one.
func (b *Binding) checkEndpoint(ep string, required bool) (Verdict, bool) {
	switch {
	case ep == "" && required:
		return Verdict{Action: Reject, Code: codes.BadRequest, Rule: "L1"}, false
	case ep != "" && ep != b.endpoint:
		return Verdict{Action: Reject, Code: codes.Forbidden, Rule: "L1"}, false
	}
	return forward, true
}

// FromBackend learns from a message the backend sent to the device. Only
// responses whose token matches a request this session forwarded count:
//   - 2.01 Created answering the pending Register: its Location ("/rd/…")
//     becomes the session's registration, with the lifetime the Register
//     asked for. A Created without a usable Location-Path teaches nothing.
//   - 2.04 Changed answering the pending Update: the Update's lt, if any,
//     becomes the lifetime.
//   - 2.02 Deleted answering the pending De-register, or 4.04 Not Found
//     answering the pending Update or De-register: the registration is
//     forgotten (the backend no longer has it, so its location could be
//     given to another device).
//
// Any other final response ends the pending request without changing the
// registration; 2.31 Continue (block-wise Register or Update) keeps it
// pending. Every message from the backend is forwarded (L3, L4): FromBackend
// decides nothing.
func (b *Binding) FromBackend(m Message) {
	if m.bad || (m.Kind != Response && m.Kind != Notify) || m.Code == codes.Continue {
		return
	}
	switch {
	case b.register.matches(m.Token):
		b.register.active = false
		if m.Code == codes.Created && strings.HasPrefix(m.Location, "/rd/") {
			b.location, b.lifetime = m.Location, b.register.lifetime
		}
	case b.update.matches(m.Token):
		b.update.active = false
		switch m.Code {
		case codes.Changed:
			if b.update.lifetime > 0 {
				b.lifetime = b.update.lifetime
			}
		case codes.NotFound:
			b.forget()
		}
	case b.deregister.matches(m.Token):
		b.deregister.active = false
		if m.Code == codes.Deleted || m.Code == codes.NotFound {
			b.forget()
		}
	}
}

func (b *Binding) forget() {
	b.location, b.lifetime = "", 0
	b.update.active, b.deregister.active = false, false
}
