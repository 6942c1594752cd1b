package devsim

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pion/dtls/v4/pkg/protocol/alert"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrClosed is returned by operations on a closed Device or Backend, and
	// by exchanges that were pending when it closed.
	ErrClosed = errors.New("devsim: closed")
	// ErrTimeout means a confirmable message was not acknowledged after
	// MAX_RETRANSMIT retransmissions (RFC 7252 §4.2).
	ErrTimeout = errors.New("devsim: no acknowledgement")
	// ErrReset means the peer answered a confirmable message with a Reset.
	ErrReset = errors.New("devsim: reset by peer")
	// ErrNotRegistered is returned by a Device that has no registration
	// location yet, and by a Backend asked about an unknown endpoint.
	ErrNotRegistered = errors.New("devsim: not registered")
	// ErrNoObservation is returned by Device.Notify when the backend has not
	// established an observation.
	ErrNoObservation = errors.New("devsim: no observation")
	// ErrNotObservable is returned by Backend.Observe when the device answered
	// without an Observe option, that is, it did not accept the observation.
	ErrNotObservable = errors.New("devsim: resource not observable")
	// ErrSessionLost means the device has no usable DTLS session: the
	// gateway ended it (an alert or close_notify, which the error wraps: see
	// AlertOf), the device abandoned it (Reboot), or its last handshake
	// failed. Exchanges waiting when the gateway ends a session fail with it
	// at once. A Device keeps its socket: Reconnect, Rehandshake or Reboot
	// start a new session.
	ErrSessionLost = errors.New("devsim: dtls session lost")
	// ErrRefused is wrapped (with ErrSessionLost) when the gateway ended a
	// session before any application data came back on it: the handshake
	// completed on the device's side and the gateway then refused the
	// session, e.g. by policy after its Finished. A handshake refused that
	// way counts as failed, not as completed.
	ErrRefused = errors.New("devsim: session refused after the handshake")
)

// AlertOf returns the DTLS alert the gateway sent, if err carries one
// (a failed Dial or handshake, or an ErrSessionLost).
func AlertOf(err error) (alert.Alert, bool) {
	var a *alert.Alert
	if errors.As(err, &a) && a != nil {
		return *a, true
	}
	// pion's alert error embeds *alert.Alert, whose Marshal gives level and
	// description; the error type itself is not exported.
	var ae interface {
		IsFatalOrCloseNotify() bool
		Marshal() ([]byte, error)
	}
	if !errors.As(err, &ae) {
		return alert.Alert{}, false
	}
	b, e := ae.Marshal()
	if e != nil || len(b) != 2 {
		return alert.Alert{}, false
	}
	return alert.Alert{Level: alert.Level(b[0]), Description: alert.Description(b[1])}, true
}

// CodeError reports a CoAP response whose code differs from the one the
// operation expects, e.g. a Register answered 4.03 Forbidden by the gateway.
type CodeError struct {
	Op   string     // "register", "update", "read /3/0/0", ...
	Code codes.Code // the code received
	Want codes.Code // the code expected
}

func (e *CodeError) Error() string {
	return fmt.Sprintf("devsim: %s: got %s, want %s", e.Op, codeString(e.Code), codeString(e.Want))
}

// codeString prints a code in the dotted form of RFC 7252 §3, e.g. "2.05 Content".
func codeString(c codes.Code) string {
	return fmt.Sprintf("%d.%02d %v", c>>5, c&0x1f, c)
}

// isRequest reports whether c is a method code (class 0, not Empty).
func isRequest(c codes.Code) bool { return c > codes.Empty && c < 32 }

// isResponse reports whether c is a response code (classes 2 to 5).
func isResponse(c codes.Code) bool { return c >= 64 && c < 192 }

// encode serializes m with the CoAP-over-UDP codec of RFC 7252 §3.
func encode(m message.Message) ([]byte, error) {
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	n, err := coder.DefaultCoder.Encode(m, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// decode parses one CoAP-over-UDP datagram. The result does not alias data.
func decode(data []byte) (message.Message, error) {
	data = bytes.Clone(data)
	m := message.Message{Options: make(message.Options, 0, 16)}
	for {
		_, err := coder.DefaultCoder.Decode(data, &m)
		if errors.Is(err, message.ErrOptionsTooSmall) {
			m.Options = make(message.Options, 0, 2*cap(m.Options))
			continue
		}
		return m, err
	}
}

// emptyMessage builds an Empty ACK or RST for mid (RFC 7252 §4.2, §4.3).
func emptyMessage(typ message.Type, mid int32) []byte {
	raw, _ := encode(message.Message{Type: typ, Code: codes.Empty, MessageID: mid}) // cannot fail: no token, options or payload
	return raw
}

// withPath appends one Uri-Path (or Location-Path) option per segment of p.
func withPath(opts message.Options, id message.OptionID, p string) message.Options {
	for seg := range strings.SplitSeq(strings.Trim(p, "/"), "/") {
		if seg != "" {
			opts = opts.Add(message.Option{ID: id, Value: []byte(seg)})
		}
	}
	return opts
}

// withUint sets an unsigned integer option (RFC 7252 §3.2 uint format).
func withUint(opts message.Options, id message.OptionID, v uint32) message.Options {
	buf := make([]byte, 4)
	n, _ := message.EncodeUint32(buf, v) // cannot fail: buf holds any uint32
	return opts.Set(message.Option{ID: id, Value: buf[:n]})
}

// joinPath joins the options with the given ID into "/a/b"; "" if there are none.
func joinPath(opts message.Options, id message.OptionID) string {
	var b strings.Builder
	for _, o := range opts {
		if o.ID == id {
			b.WriteByte('/')
			b.Write(o.Value)
		}
	}
	return b.String()
}

// queries returns the Uri-Query options in order.
func queries(opts message.Options) []string {
	var q []string
	for _, o := range opts {
		if o.ID == message.URIQuery {
			q = append(q, string(o.Value))
		}
	}
	return q
}

// queryValue returns the value of "name=value" in q.
func queryValue(q []string, name string) (string, bool) {
	i := slices.IndexFunc(q, func(s string) bool { return strings.HasPrefix(s, name+"=") })
	if i < 0 {
		return "", false
	}
	return q[i][len(name)+1:], true
}

// observeValue returns the Observe option of m, if present.
func observeValue(m message.Message) (uint32, bool) {
	v, err := m.Options.Observe()
	return v, err == nil
}
