// Package lwm2m understands just enough of the CoAP messages that LwM2M 1.0–1.2
// devices and servers exchange over UDP (RFC 7252 §3 framing, one message per
// datagram) for the gateway to enforce endpoint binding: it classifies a
// datagram (Register, Update, De-register, Bootstrap-Request, Send, Notify,
// …), keeps a small per-session state machine that applies rules L1 and L2 of
// DESIGN.md §3, and builds the gateway's own answer to a rejected request.
//
// Decoding uses the UDP coder of github.com/plgd-dev/go-coap/v3; only the
// options the binding needs are interpreted, and messages the gateway does not
// act on (notifications, responses, Read/Write/Execute/Observe) are classified
// without allocating.
//
// It does not own sockets, DTLS, sessions or logging, and it imports nothing
// of this module.
package lwm2m
