package lwm2m

import (
	"math/rand/v2"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// Reply builds the gateway's own answer to req, a request from the device
// that it will not forward (Verdict.Action == Reject, or an Inspect error
// other than ErrMalformed):
//   - for a CON request, a piggybacked response in an ACK with req's
//     Message ID and token (RFC 7252 §5.2.1);
//   - for a NON request, a NON response with req's token and a random
//     Message ID (§5.2.3); use AppendReply to choose the ID.
//
// code must be a response code (class 2, 4 or 5). The payload is a short
// diagnostic text (§5.5.2) naming the code only, never the endpoint or
// identity. ErrNotRequest is returned for anything else.
func Reply(req Message, code codes.Code) ([]byte, error) {
	return AppendReply(nil, req, code, uint16(rand.Uint32()))
}

// ReplyRetryAfter is Reply for 5.03 Service Unavailable carrying a Max-Age
// option (RFC 7252 §5.9.3.4, §5.10.5): the device should not retry before
// maxAge seconds. The gateway answers so while the backend is unreachable.
func ReplyRetryAfter(req Message, maxAge uint32) ([]byte, error) {
	return appendReply(nil, req, codes.ServiceUnavailable, uint16(rand.Uint32()), &maxAge)
}

// AppendReply is Reply appending to dst, with messageID as the Message ID of
// a NON response (ignored for CON, whose ACK reuses the request's ID).
func AppendReply(dst []byte, req Message, code codes.Code, messageID uint16) ([]byte, error) {
	return appendReply(dst, req, code, messageID, nil)
}

func appendReply(dst []byte, req Message, code codes.Code, messageID uint16, maxAge *uint32) ([]byte, error) {
	if !req.Kind.IsRequest() || req.Code>>5 != 0 || req.Code == codes.Empty ||
		len(req.Token) > message.MaxTokenSize {
		return dst, ErrNotRequest
	}
	if class := code >> 5; code > 0xff || (class != 2 && class != 4 && class != 5) {
		return dst, ErrNotRequest
	}
	out := message.Message{
		Token:   req.Token,
		Code:    code,
		Payload: diagnostic(code),
	}
	if maxAge != nil {
		buf := make([]byte, 4)
		opts, _, err := out.Options.SetUint32(buf, message.MaxAge, *maxAge)
		if err != nil {
			return dst, err
		}
		out.Options = opts
	}
	switch req.Type {
	case message.Confirmable:
		out.Type, out.MessageID = message.Acknowledgement, int32(req.MessageID)
	case message.NonConfirmable:
		out.Type, out.MessageID = message.NonConfirmable, int32(messageID)
	default:
		return dst, ErrNotRequest
	}
	size, err := coder.DefaultCoder.Size(out)
	if err != nil {
		return dst, err
	}
	n := len(dst)
	dst = append(dst, make([]byte, size)...)
	if _, err := coder.DefaultCoder.Encode(out, dst[n:]); err != nil {
		return dst[:n], err
	}
	return dst, nil
}

// Diagnostic payloads (RFC 7252 §5.5.2): fixed texts, so a reply never
// echoes anything the device sent.
var (
	textBadRequest  = []byte("bad request")
	textForbidden   = []byte("forbidden by gateway policy")
	textNotFound    = []byte("registration not found")
	textUnavailable = []byte("backend unavailable")
)

func diagnostic(code codes.Code) []byte {
	switch code {
	case codes.BadRequest:
		return textBadRequest
	case codes.Forbidden:
		return textForbidden
	case codes.NotFound:
		return textNotFound
	case codes.ServiceUnavailable:
		return textUnavailable
	}
	return nil
}
