package lwm2m

import (
	"errors"
	"strconv"
)

// Sentinel errors. Inspect wraps them in an *InspectError; test with errors.Is.
var (
	// ErrMalformed reports a datagram that is not a well-formed CoAP message
	// (RFC 7252 §3 "message format error"): truncated, wrong version, token
	// longer than 8 bytes, bad option encoding, reserved code class, or a
	// type/code combination §4 forbids. The gateway drops such datagrams.
	ErrMalformed = errors.New("lwm2m: malformed CoAP message")
	// ErrMissingEndpoint reports a Register or Bootstrap-Request without an
	// endpoint name, or with an empty one.
	ErrMissingEndpoint = errors.New("lwm2m: missing endpoint name")
	// ErrEndpointTooLong reports an endpoint name longer than the limit of
	// the Inspector (DefaultMaxEndpoint unless configured).
	ErrEndpointTooLong = errors.New("lwm2m: endpoint name too long")
	// ErrDuplicateParameter reports an LwM2M query parameter given twice
	// (names compared case-insensitively, so "ep" and "EP" collide).
	ErrDuplicateParameter = errors.New("lwm2m: duplicate query parameter")
	// ErrInvalidParameter reports an LwM2M query parameter whose value does
	// not parse (non-numeric lt, unknown binding letter, …), whose name is a
	// case variant of a known one, or a query option containing '&'.
	ErrInvalidParameter = errors.New("lwm2m: invalid query parameter")
	// ErrInvalidPath reports a request Uri-Path or response Location-Path
	// segment that a backend could normalise into a different path: one
	// containing '/', a "." or ".." segment, or an empty segment in a path of
	// several segments.
	ErrInvalidPath = errors.New("lwm2m: invalid path segment")
	// ErrNotRequest is returned by Reply for a message that is not a CON or
	// NON request, or for a code that is not a response code.
	ErrNotRequest = errors.New("lwm2m: not a request to answer")
)

// Causes of ErrMalformed that go-coap's decoder does not report itself.
var (
	errReservedClass = errors.New("reserved code class")
	errEmptyNotEmpty = errors.New("empty message with token, options or payload")
	errEmptyNON      = errors.New("empty non-confirmable message")
	errRequestInAck  = errors.New("request in acknowledgement or reset")
	errResponseInRST = errors.New("response in reset")
)

// InspectError is the error Inspect returns. Err is one of the sentinels
// above; Param names the query parameter concerned, if any; Cause is the
// underlying decoding error, if any. It never carries the endpoint name or
// any other value from the datagram, so it is safe to log (R9).
type InspectError struct {
	Err   error
	Param string
	Cause error
}

func (e *InspectError) Error() string {
	s := e.Err.Error()
	if e.Param != "" {
		s += " " + strconv.Quote(e.Param)
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

// Unwrap returns the sentinel and the cause, so errors.Is matches either.
func (e *InspectError) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Cause}
}
