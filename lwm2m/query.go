package lwm2m

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
)

// paramID is one LwM2M query parameter, as a bit of a set.
type paramID uint8

const (
	paramEP paramID = 1 << iota
	paramLT
	paramVersion
	paramBinding
	paramSMS
	paramQueue
	paramPCT
)

// paramNames are the parameters of Register, Update and Bootstrap-Request
// (OMA LwM2M 1.1 core §6.1.7.1, §6.2.1, §6.2.2).
var paramNames = [...]struct {
	name string
	id   paramID
}{
	{"ep", paramEP},
	{"lt", paramLT},
	{"lwm2m", paramVersion},
	{"b", paramBinding},
	{"sms", paramSMS},
	{"Q", paramQueue},
	{"pct", paramPCT},
}

var (
	errAmpersand = errors.New("'&' inside a query option")
	errNameCase  = errors.New("parameter name in the wrong case")
)

// params holds the parameters of one request as sub-slices of the datagram.
type params struct {
	seen                     paramID
	ep, version, binding, sm []byte
	lifetime                 uint64
	pct                      uint64
	queue                    bool
}

// parse reads the Uri-Query options of a Register, Update or
// Bootstrap-Request. Each option holds one "name=value" (RFC 7252 §6.4).
func (p *params) parse(query []message.Option, maxEndpoint int) error {
	for _, o := range query {
		v := o.Value
		// A backend that joins the options into one query string and splits
		// it again would read "ep=a&ep=b" as two parameters.
		if bytes.IndexByte(v, '&') >= 0 {
			return &InspectError{Err: ErrInvalidParameter, Cause: errAmpersand}
		}
		name, value, hasValue := v, []byte(nil), false
		if i := bytes.IndexByte(v, '='); i >= 0 {
			name, value, hasValue = v[:i], v[i+1:], true
		}
		id, canonical, exact := lookupParam(name)
		if id == 0 {
			continue // unknown parameters are ignored
		}
		if !exact {
			// "EP=x" is not ep to us, but might be to a lenient backend.
			return &InspectError{Err: ErrInvalidParameter, Param: canonical, Cause: errNameCase}
		}
		if p.seen&id != 0 {
			return &InspectError{Err: ErrDuplicateParameter, Param: canonical}
		}
		p.seen |= id
		ok := true
		switch id {
		case paramEP:
			if len(value) == 0 {
				return &InspectError{Err: ErrMissingEndpoint, Param: canonical}
			}
			if len(value) > maxEndpoint {
				return &InspectError{Err: ErrEndpointTooLong, Param: canonical}
			}
			p.ep = value
		case paramLT:
			p.lifetime, ok = parseUint(value, math.MaxUint32)
		case paramVersion:
			p.version, ok = value, validVersion(value)
		case paramBinding:
			p.binding, ok = value, validBinding(value)
		case paramSMS:
			p.sm, ok = value, len(value) > 0
		case paramQueue:
			p.queue, ok = true, !hasValue // "Q" has no value
		case paramPCT:
			p.pct, ok = parseUint(value, math.MaxUint16)
		}
		if !ok {
			return &InspectError{Err: ErrInvalidParameter, Param: canonical}
		}
	}
	return nil
}

// strings copies the path and the textual parameters into one string, so a
// Register costs a single allocation.
func (p *params) strings(path []message.Option) (string, Params) {
	n := len(p.ep) + len(p.version) + len(p.binding) + len(p.sm)
	for _, o := range path {
		n += 1 + len(o.Value)
	}
	var b strings.Builder
	b.Grow(n)
	for _, o := range path {
		b.WriteByte('/')
		b.Write(o.Value)
	}
	pathLen := b.Len()
	b.Write(p.ep)
	b.Write(p.version)
	b.Write(p.binding)
	b.Write(p.sm)
	s := b.String()

	next := func(i *int, n int) string {
		v := s[*i : *i+n]
		*i += n
		return v
	}
	off := pathLen
	out := Params{
		Endpoint:           next(&off, len(p.ep)),
		Version:            next(&off, len(p.version)),
		Binding:            next(&off, len(p.binding)),
		SMS:                next(&off, len(p.sm)),
		Lifetime:           time.Duration(p.lifetime) * time.Second,
		Queue:              p.queue,
		PreferredFormat:    message.MediaType(p.pct),
		HasPreferredFormat: p.seen&paramPCT != 0,
	}
	return s[:pathLen], out
}

// lookupParam finds name among paramNames, ignoring ASCII case, and reports
// whether the case matched too.
func lookupParam(name []byte) (id paramID, canonical string, exact bool) {
	for _, p := range paramNames {
		if len(name) == len(p.name) && equalFoldASCII(name, p.name) {
			return p.id, p.name, string(name) == p.name
		}
	}
	return 0, "", false
}

func equalFoldASCII(b []byte, s string) bool {
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// parseUint parses a non-empty decimal number no larger than limit (no sign,
// no spaces).
func parseUint(b []byte, limit uint64) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
		if n > limit {
			return 0, false
		}
	}
	return n, true
}

// validVersion accepts "major.minor" in decimal, e.g. "1.1".
func validVersion(b []byte) bool {
	i := bytes.IndexByte(b, '.')
	if i < 0 {
		return false
	}
	major, minor := b[:i], b[i+1:]
	_, ok1 := parseUint(major, math.MaxUint16)
	_, ok2 := parseUint(minor, math.MaxUint16)
	return ok1 && ok2
}

// validBinding accepts the binding letters of LwM2M 1.0 (U, UQ, S, SQ, US,
// UQS) and 1.1/1.2 (U, S, N, T, L, in any combination).
func validBinding(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if strings.IndexByte("USNTLQ", c) < 0 {
			return false
		}
	}
	return true
}
