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

// AppendReply is Reply appending to dst, with messageID as the Message ID of
// a NON response (ignored for CON, whose ACK reuses the request's ID).
func AppendReply(dst []byte, req Message, code codes.Code, messageID uint16) ([]byte, error) {
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
	textBadRequest = []byte("bad request")
	textForbidden  = []byte("forbidden by gateway policy")
)

func diagnostic(code codes.Code) []byte {
	switch code {
	case codes.BadRequest:
		return textBadRequest
	case codes.Forbidden:
		return textForbidden
	}
	return nil
}
