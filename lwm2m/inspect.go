package lwm2m

import (
	"bytes"
	"errors"
	"strings"
	"sync"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// DefaultMaxEndpoint is the longest endpoint name Inspect accepts, in bytes.
const DefaultMaxEndpoint = 255

// Inspector inspects datagrams under configurable limits. The zero value uses
// the defaults. An Inspector is never modified by Inspect, so one value may be
// shared by any number of goroutines.
type Inspector struct {
	// MaxEndpoint is the longest endpoint name (ep) accepted, in bytes.
	// Zero or negative means DefaultMaxEndpoint.
	MaxEndpoint int
}

// Inspect is Inspector{}.Inspect: it inspects datagram with the default limits.
func Inspect(datagram []byte) (Message, error) {
	return Inspector{}.Inspect(datagram)
}

// pooledOptions is how many options Inspect decodes without allocating;
// LwM2M messages rarely carry more than ten.
const pooledOptions = 16

// optionBuf is the decoder's option array. go-coap's decoder appends through
// a pointer, which makes a local array escape, so buffers are pooled instead.
type optionBuf [pooledOptions]message.Option

var optionBufs = sync.Pool{New: func() any { return new(optionBuf) }}

// Inspect decodes one CoAP-over-UDP datagram (RFC 7252 §3) with go-coap's UDP
// coder and classifies it. It allocates nothing for the messages the gateway
// only passes on (Notify, Response, Empty, Other) and one string for a
// Register, Update, Deregister, Bootstrap-Request, Send or a 2.01 Created.
//
// On error it returns an *InspectError wrapping a sentinel, and a Message
// holding what is known:
//   - ErrMalformed: Kind is Invalid; Type, Code and MessageID are set when the
//     datagram has a valid 4-byte header (a caller may answer a CON with a
//     RST), Token is nil. The datagram must not be forwarded: the backend
//     might parse it differently.
//   - any other sentinel: the CoAP message is well formed and Type, Code,
//     MessageID, Token and Kind are set, but Path and Params are not. The
//     caller answers the request with Reply(m, codes.BadRequest).
//
// Inspect is strict where a lax parser would let a device slip past L1/L2 on
// a backend that parses differently: duplicate or case-variant LwM2M
// parameters, '&' inside a query option, and path segments a backend could
// normalise ("a/b", ".", "..", empty) are errors.
//
// The Location-Path of a backend's 2.01 Created is read more leniently: the
// backend is trusted, and some LwM2M servers (Telefonica's lwm2m-node-lib)
// send the whole location "rd/5" as one option although RFC 7252 §5.10.7
// makes each option one segment. A '/' inside such an option is taken as a
// segment separator; a Location with dot or empty segments is still left
// empty, so a Binding learns nothing from it.
func (in Inspector) Inspect(datagram []byte) (Message, error) {
	buf := optionBufs.Get().(*optionBuf)
	defer func() {
		clear(buf[:]) // drop references into the datagram
		optionBufs.Put(buf)
	}()
	raw := message.Message{Options: buf[:0], MessageID: -1}
	_, err := coder.DefaultCoder.Decode(datagram, &raw)
	if err != nil && errors.Is(err, message.ErrOptionsTooSmall) {
		// More options than the pooled buffer holds. An option takes at
		// least one byte, so len(datagram) options always fit.
		raw.Options = make(message.Options, 0, len(datagram))
		_, err = coder.DefaultCoder.Decode(datagram, &raw)
	}
	var m Message
	if raw.MessageID >= 0 { // the decoder got past the fixed header
		m.Type, m.Code, m.MessageID = raw.Type, raw.Code, uint16(raw.MessageID)
	}
	if err != nil {
		return malformed(m, err)
	}
	m.Token = raw.Token

	// RFC 7252 §3: class 0 is a request (0.00 Empty), 2, 4 and 5 are
	// responses, the others are reserved. §4.1–§4.3: an Empty message has no
	// token, options or payload and is never NON; a request is never carried
	// in an ACK or RST, a response never in a RST.
	switch class := m.Code >> 5; {
	case m.Code == codes.Empty:
		if len(datagram) > 4 {
			return malformed(m, errEmptyNotEmpty)
		}
		if m.Type == message.NonConfirmable {
			return malformed(m, errEmptyNON)
		}
		m.Kind = Empty
		return m, nil
	case class == 0:
		if m.Type == message.Acknowledgement || m.Type == message.Reset {
			return malformed(m, errRequestInAck)
		}
	case class == 2 || class == 4 || class == 5:
		if m.Type == message.Reset {
			return malformed(m, errResponseInRST)
		}
	default:
		return malformed(m, errReservedClass)
	}

	// Options come sorted by number (deltas are never negative), so each
	// repeatable option forms one contiguous run.
	opts := raw.Options
	var path, query, location []message.Option
	for i := 0; i < len(opts); {
		j := i + 1
		for j < len(opts) && opts[j].ID == opts[i].ID {
			j++
		}
		switch opts[i].ID {
		case message.Observe:
			m.Observe = true
		case message.URIPath:
			path = opts[i:j]
		case message.URIQuery:
			query = opts[i:j]
		case message.LocationPath:
			location = opts[i:j]
		}
		i = j
	}

	if m.Code>>5 != 0 {
		m.Kind = Response
		if m.Observe && (m.Code == codes.Content || m.Code == codes.Valid) {
			m.Kind = Notify
		}
		if m.Code == codes.Created && len(location) > 0 {
			m.Location = locationOf(location)
		}
		return m, nil
	}

	if !validSegments(path) {
		m.Kind = Other
		return invalid(m, &InspectError{Err: ErrInvalidPath})
	}
	m.Kind = classify(m.Code, path, len(query) > 0)
	if m.Kind == Other {
		return m, nil
	}

	var q params
	if m.Kind == Register || m.Kind == Update || m.Kind == BootstrapRequest {
		if err := q.parse(query, in.maxEndpoint()); err != nil {
			return invalid(m, err)
		}
		if q.seen&paramEP == 0 && (m.Kind == Register || m.Kind == BootstrapRequest) {
			return invalid(m, &InspectError{Err: ErrMissingEndpoint, Param: "ep"})
		}
	}
	m.Path, m.Params = q.strings(path)
	if m.Kind == Register && q.seen&paramLT == 0 {
		m.Params.Lifetime = DefaultLifetime
	}
	return m, nil
}

func (in Inspector) maxEndpoint() int {
	if in.MaxEndpoint <= 0 {
		return DefaultMaxEndpoint
	}
	return in.MaxEndpoint
}

func malformed(m Message, cause error) (Message, error) {
	m.Kind, m.Token, m.bad = Invalid, nil, true
	return m, &InspectError{Err: ErrMalformed, Cause: cause}
}

func invalid(m Message, err error) (Message, error) {
	m.bad = true
	return m, err
}

// classify maps method and Uri-Path to an LwM2M operation (OMA LwM2M 1.1
// transport §6.1, §6.2, §6.4).
func classify(code codes.Code, path []message.Option, hasQuery bool) Kind {
	if len(path) == 0 {
		return Other
	}
	switch string(path[0].Value) {
	case "rd":
		switch {
		case len(path) == 1 && code == codes.POST:
			return Register
		case len(path) > 1 && code == codes.POST:
			return Update
		case len(path) > 1 && code == codes.DELETE:
			return Deregister
		}
	case "bs":
		if len(path) == 1 && code == codes.POST {
			if hasQuery {
				return BootstrapRequest
			}
			return BootstrapFinish
		}
	case "dp":
		if len(path) == 1 && code == codes.POST {
			return Send
		}
	}
	return Other
}

// validSegments rejects path segments a backend could normalise into another
// path (RFC 3986 §5.2.4 dot segments, a '/' inside a segment, or an empty
// segment among several); no LwM2M path has them.
func validSegments(segs []message.Option) bool {
	for _, o := range segs {
		v := o.Value
		switch {
		case bytes.IndexByte(v, '/') >= 0,
			string(v) == ".", string(v) == "..",
			len(v) == 0 && len(segs) > 1:
			return false
		}
	}
	return true
}

// locationOf joins a backend's Location-Path options into "/a/b", splitting
// an option that holds several segments ("rd/5"); it returns "" when a
// segment is empty, "." or "..".
func locationOf(segs []message.Option) string {
	loc := joinSegments(segs)
	for seg := range strings.SplitSeq(loc[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return ""
		}
	}
	return loc
}

func joinSegments(segs []message.Option) string {
	n := 0
	for _, o := range segs {
		n += 1 + len(o.Value)
	}
	var b strings.Builder
	b.Grow(n)
	for _, o := range segs {
		b.WriteByte('/')
		b.Write(o.Value)
	}
	return b.String()
}
