package lwm2m

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

func TestInspectKinds(t *testing.T) {
	tests := []struct {
		name     string
		msg      coap
		kind     Kind
		path     string
		location string
		observe  bool
	}{
		{"register", req(codes.POST, "/rd", "ep=dev1"), Register, "/rd", "", false},
		{"register NON", req(codes.POST, "/rd", "ep=dev1").withType(message.NonConfirmable), Register, "/rd", "", false},
		{"update", req(codes.POST, "/rd/5a3f"), Update, "/rd/5a3f", "", false},
		{"update with parameters", req(codes.POST, "/rd/5a3f", "lt=60", "b=U"), Update, "/rd/5a3f", "", false},
		{"update of a multi-segment location", req(codes.POST, "/rd/a/b"), Update, "/rd/a/b", "", false},
		{"deregister", req(codes.DELETE, "/rd/5a3f"), Deregister, "/rd/5a3f", "", false},
		{"bootstrap request", req(codes.POST, "/bs", "ep=dev1"), BootstrapRequest, "/bs", "", false},
		{"bootstrap request pct only is still a request", req(codes.POST, "/bs", "pct=112", "ep=dev1"), BootstrapRequest, "/bs", "", false},
		{"bootstrap finish", req(codes.POST, "/bs"), BootstrapFinish, "/bs", "", false},
		{"send", req(codes.POST, "/dp"), Send, "/dp", "", false},
		{"notify piggybacked", resp(codes.Content).withObserve(), Notify, "", "", true},
		{"notify CON", resp(codes.Content).withObserve().withType(message.Confirmable), Notify, "", "", true},
		{"notify NON 2.03", resp(codes.Valid).withObserve().withType(message.NonConfirmable), Notify, "", "", true},
		{"content without observe", resp(codes.Content), Response, "", "", false},
		{"error response with observe is no notify", resp(codes.NotFound).withObserve(), Response, "", "", true},
		{"changed", resp(codes.Changed), Response, "", "", false},
		{"created", resp(codes.Created).withLocation("/rd/5a3f"), Response, "", "/rd/5a3f", false},
		{"created with one segment", resp(codes.Created).withLocation("/0"), Response, "", "/0", false},
		{"location on a non-created response is ignored", resp(codes.Changed).withLocation("/rd/5a3f"), Response, "", "", false},
		{"created with the location in one option", resp(codes.Created).withLocationSegments("rd/a"), Response, "", "/rd/a", false},
		{"created with a dot segment inside an option teaches nothing", resp(codes.Created).withLocationSegments("rd", "a/../b"), Response, "", "", false},
		{"continue", resp(codes.Continue), Response, "", "", false},
		{"server error", resp(codes.ServiceUnavailable), Response, "", "", false},
		{"ping", coap{typ: message.Confirmable, mid: 7}, Empty, "", "", false},
		{"empty ack", coap{typ: message.Acknowledgement, mid: 7}, Empty, "", "", false},
		{"reset", coap{typ: message.Reset, mid: 7}, Empty, "", "", false},
		{"read", req(codes.GET, "/3/0/0"), Other, "", "", false},
		{"observe request", req(codes.GET, "/3/0/9").withObserve(), Other, "", "", true},
		{"write", req(codes.PUT, "/1/0/1"), Other, "", "", false},
		{"execute", req(codes.POST, "/3/0/4"), Other, "", "", false},
		{"delete instance", req(codes.DELETE, "/5/0"), Other, "", "", false},
		{"fetch composite", req(codes.FETCH, ""), Other, "", "", false},
		{"ipatch composite", req(codes.IPATCH, ""), Other, "", "", false},
		{"unknown method", req(codes.Code(0x1f), "/rd"), Other, "", "", false},
		{"root discover", req(codes.GET, ""), Other, "", "", false},
		{"PUT /rd is no register", req(codes.PUT, "/rd", "ep=dev1"), Other, "", "", false},
		{"DELETE /rd is no deregister", req(codes.DELETE, "/rd"), Other, "", "", false},
		{"GET /rd/5a3f is no update", req(codes.GET, "/rd/5a3f"), Other, "", "", false},
		{"POST /rdx is no register", req(codes.POST, "/rdx", "ep=dev1"), Other, "", "", false},
		{"POST /RD is no register", req(codes.POST, "/RD", "ep=dev1"), Other, "", "", false},
		{"POST /bs/x is no bootstrap", req(codes.POST, "/bs/x"), Other, "", "", false},
		{"POST /dp/x is no send", req(codes.POST, "/dp/x"), Other, "", "", false},
		{"register under a prefix is other", req(codes.POST, "/x/rd", "ep=dev1"), Other, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.msg.encode(t)
			m, err := Inspect(b)
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if m.Kind != tt.kind {
				t.Errorf("Kind = %v, want %v", m.Kind, tt.kind)
			}
			if m.Path != tt.path {
				t.Errorf("Path = %q, want %q", m.Path, tt.path)
			}
			if m.Location != tt.location {
				t.Errorf("Location = %q, want %q", m.Location, tt.location)
			}
			if m.Observe != tt.observe {
				t.Errorf("Observe = %v, want %v", m.Observe, tt.observe)
			}
			if m.Type != tt.msg.typ || m.Code != tt.msg.code || m.MessageID != tt.msg.mid || string(m.Token) != tt.msg.token {
				t.Errorf("header = %v %v %#x %q, want %v %v %#x %q", m.Type, m.Code, m.MessageID, m.Token,
					tt.msg.typ, tt.msg.code, tt.msg.mid, tt.msg.token)
			}
		})
	}
}

func (c coap) withLocationSegments(segs ...string) coap { c.location = segs; return c }

func TestInspectParams(t *testing.T) {
	tests := []struct {
		name string
		in   Inspector
		msg  coap
		want Params
	}{
		{
			name: "register with every parameter",
			msg:  req(codes.POST, "/rd", "ep=urn:imei:490154203237518", "lt=300", "lwm2m=1.1", "b=UQ", "sms=+4412345", "Q"),
			want: Params{Endpoint: "urn:imei:490154203237518", Lifetime: 300 * time.Second, Version: "1.1", Binding: "UQ", SMS: "+4412345", Queue: true},
		},
		{
			name: "register without lt gets the default lifetime",
			msg:  req(codes.POST, "/rd", "ep=dev1"),
			want: Params{Endpoint: "dev1", Lifetime: DefaultLifetime},
		},
		{
			name: "register with lt=0",
			msg:  req(codes.POST, "/rd", "ep=dev1", "lt=0"),
			want: Params{Endpoint: "dev1"},
		},
		{
			name: "register with the largest lt",
			msg:  req(codes.POST, "/rd", "ep=dev1", "lt=4294967295"),
			want: Params{Endpoint: "dev1", Lifetime: 4294967295 * time.Second},
		},
		{
			name: "register lwm2m 1.0 binding",
			msg:  req(codes.POST, "/rd", "lt=86400", "lwm2m=1.0", "ep=dev1", "b=UQS"),
			want: Params{Endpoint: "dev1", Lifetime: 86400 * time.Second, Version: "1.0", Binding: "UQS"},
		},
		{
			name: "unknown parameters are ignored",
			msg:  req(codes.POST, "/rd", "ep=dev1", "d=domain", "et=type", "apn=internet", "x", ""),
			want: Params{Endpoint: "dev1", Lifetime: DefaultLifetime},
		},
		{
			name: "value may contain '='",
			msg:  req(codes.POST, "/rd", "ep=a=b"),
			want: Params{Endpoint: "a=b", Lifetime: DefaultLifetime},
		},
		{
			name: "endpoint of exactly the default limit",
			msg:  req(codes.POST, "/rd", "ep="+strings.Repeat("e", DefaultMaxEndpoint)),
			want: Params{Endpoint: strings.Repeat("e", DefaultMaxEndpoint), Lifetime: DefaultLifetime},
		},
		{
			name: "endpoint of a configured limit",
			in:   Inspector{MaxEndpoint: 4},
			msg:  req(codes.POST, "/rd", "ep=dev1"),
			want: Params{Endpoint: "dev1", Lifetime: DefaultLifetime},
		},
		{
			name: "update without lt keeps lifetime zero",
			msg:  req(codes.POST, "/rd/5a3f", "b=U", "sms=123"),
			want: Params{Binding: "U", SMS: "123"},
		},
		{
			name: "update with lt",
			msg:  req(codes.POST, "/rd/5a3f", "lt=120"),
			want: Params{Lifetime: 120 * time.Second},
		},
		{
			name: "update with ep",
			msg:  req(codes.POST, "/rd/5a3f", "ep=dev1"),
			want: Params{Endpoint: "dev1"},
		},
		{
			name: "bootstrap request with pct",
			msg:  req(codes.POST, "/bs", "ep=dev1", "pct=11543"),
			want: Params{Endpoint: "dev1", PreferredFormat: message.AppLwm2mJSON, HasPreferredFormat: true},
		},
		{
			name: "bootstrap request with pct 0",
			msg:  req(codes.POST, "/bs", "pct=0", "ep=dev1"),
			want: Params{Endpoint: "dev1", PreferredFormat: message.TextPlain, HasPreferredFormat: true},
		},
		{
			name: "deregister parameters are not parsed",
			msg:  req(codes.DELETE, "/rd/5a3f", "lt=zz"),
			want: Params{},
		},
		{
			name: "send parameters are not parsed",
			msg:  req(codes.POST, "/dp", "ep=other"),
			want: Params{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.in.Inspect(tt.msg.encode(t))
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if m.Params != tt.want {
				t.Errorf("Params = %+v\nwant     %+v", m.Params, tt.want)
			}
		})
	}
}

func TestInspectErrors(t *testing.T) {
	longEP := "ep=" + strings.Repeat("x", 10*1024)
	valid := req(codes.POST, "/rd", "ep=dev1")
	tests := []struct {
		name  string
		in    Inspector
		b     []byte
		want  error // sentinel
		cause error // go-coap cause, if any
		kind  Kind
	}{
		{"empty datagram", Inspector{}, nil, ErrMalformed, coder.ErrMessageTruncated, Invalid},
		{"three bytes", Inspector{}, []byte{0x40, 0x01, 0x00}, ErrMalformed, coder.ErrMessageTruncated, Invalid},
		{"version 0", Inspector{}, []byte{0x00, 0x01, 0x00, 0x01}, ErrMalformed, coder.ErrMessageInvalidVersion, Invalid},
		{"version 2", Inspector{}, []byte{0x80, 0x01, 0x00, 0x01}, ErrMalformed, coder.ErrMessageInvalidVersion, Invalid},
		{"version 3", Inspector{}, []byte{0xc0, 0x01, 0x00, 0x01}, ErrMalformed, coder.ErrMessageInvalidVersion, Invalid},
		{"token shorter than TKL", Inspector{}, []byte{0x48, 0x01, 0x00, 0x01, 1, 2}, ErrMalformed, coder.ErrMessageTruncated, Invalid},
		{"option value truncated", Inspector{}, hexBytes("4401000174 6f6b31 b5 7264"), ErrMalformed, message.ErrOptionTruncated, Invalid},
		{"option delta extension truncated", Inspector{}, hexBytes("40010001 d0"), ErrMalformed, message.ErrOptionTruncated, Invalid},
		{"option length extension truncated", Inspector{}, hexBytes("40010001 be00"), ErrMalformed, message.ErrOptionTruncated, Invalid},
		{"option delta nibble 15", Inspector{}, hexBytes("40010001 f1 41"), ErrMalformed, message.ErrOptionUnexpectedExtendMarker, Invalid},
		{"option length nibble 15", Inspector{}, hexBytes("40010001 bf 41"), ErrMalformed, message.ErrOptionUnexpectedExtendMarker, Invalid},
		{"option number above 65535", Inspector{}, hexBytes("40010001 e0ffff e0ffff"), ErrMalformed, message.ErrOptionNotFound, Invalid},
		{"payload marker without payload", Inspector{}, hexBytes("40450001 ff"), ErrMalformed, message.ErrPayloadMarkerWithoutPayload, Invalid},
		{"reserved class 1", Inspector{}, []byte{0x40, 1 << 5, 0, 1}, ErrMalformed, errReservedClass, Invalid},
		{"reserved class 3", Inspector{}, []byte{0x40, 3 << 5, 0, 1}, ErrMalformed, errReservedClass, Invalid},
		{"reserved class 6", Inspector{}, []byte{0x40, 6 << 5, 0, 1}, ErrMalformed, errReservedClass, Invalid},
		{"signaling class 7 on UDP", Inspector{}, []byte{0x40, byte(codes.Ping), 0, 1}, ErrMalformed, errReservedClass, Invalid},
		{"empty with token", Inspector{}, []byte{0x41, 0x00, 0x00, 0x01, 0xaa}, ErrMalformed, errEmptyNotEmpty, Invalid},
		{"empty with payload", Inspector{}, []byte{0x60, 0x00, 0x00, 0x01, 0xff, 0x01}, ErrMalformed, errEmptyNotEmpty, Invalid},
		{"empty NON", Inspector{}, []byte{0x50, 0x00, 0x00, 0x01}, ErrMalformed, errEmptyNON, Invalid},
		{"request in ACK", Inspector{}, req(codes.POST, "/rd", "ep=dev1").withType(message.Acknowledgement).encode(t), ErrMalformed, errRequestInAck, Invalid},
		{"request in RST", Inspector{}, req(codes.GET, "/3").withType(message.Reset).encode(t), ErrMalformed, errRequestInAck, Invalid},
		{"response in RST", Inspector{}, resp(codes.Content).withType(message.Reset).encode(t), ErrMalformed, errResponseInRST, Invalid},
		{"10 KB endpoint", Inspector{}, req(codes.POST, "/rd", longEP).encode(t), ErrEndpointTooLong, nil, Register},
		{"endpoint one byte over the default limit", Inspector{}, req(codes.POST, "/rd", "ep="+strings.Repeat("e", 256)).encode(t), ErrEndpointTooLong, nil, Register},
		{"endpoint over a configured limit", Inspector{MaxEndpoint: 3}, valid.encode(t), ErrEndpointTooLong, nil, Register},
		{"bootstrap 10 KB endpoint", Inspector{}, req(codes.POST, "/bs", longEP).encode(t), ErrEndpointTooLong, nil, BootstrapRequest},
		{"update 10 KB endpoint", Inspector{}, req(codes.POST, "/rd/5a3f", longEP).encode(t), ErrEndpointTooLong, nil, Update},
		{"register without query", Inspector{}, req(codes.POST, "/rd").encode(t), ErrMissingEndpoint, nil, Register},
		{"register without ep", Inspector{}, req(codes.POST, "/rd", "lt=60").encode(t), ErrMissingEndpoint, nil, Register},
		{"register empty ep", Inspector{}, req(codes.POST, "/rd", "ep=").encode(t), ErrMissingEndpoint, nil, Register},
		{"register bare ep", Inspector{}, req(codes.POST, "/rd", "ep").encode(t), ErrMissingEndpoint, nil, Register},
		{"bootstrap without ep", Inspector{}, req(codes.POST, "/bs", "pct=110").encode(t), ErrMissingEndpoint, nil, BootstrapRequest},
		{"duplicate ep", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "ep=dev2").encode(t), ErrDuplicateParameter, nil, Register},
		{"duplicate identical ep", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "ep=dev1").encode(t), ErrDuplicateParameter, nil, Register},
		{"duplicate ep on bootstrap", Inspector{}, req(codes.POST, "/bs", "ep=dev1", "ep=dev2").encode(t), ErrDuplicateParameter, nil, BootstrapRequest},
		{"duplicate lt", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "lt=1", "lt=2").encode(t), ErrDuplicateParameter, nil, Register},
		{"duplicate Q", Inspector{}, req(codes.POST, "/rd/5a3f", "Q", "Q").encode(t), ErrDuplicateParameter, nil, Update},
		{"ep and EP", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "EP=dev2").encode(t), ErrInvalidParameter, nil, Register},
		{"Ep alone", Inspector{}, req(codes.POST, "/rd", "Ep=dev1").encode(t), ErrInvalidParameter, nil, Register},
		{"lowercase q", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "q").encode(t), ErrInvalidParameter, nil, Register},
		{"ampersand in a query option", Inspector{}, req(codes.POST, "/rd", "ep=dev1&ep=dev2").encode(t), ErrInvalidParameter, nil, Register},
		{"ampersand in an unknown parameter", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "x=1&ep=dev2").encode(t), ErrInvalidParameter, nil, Register},
		{"non-numeric lt", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "lt=abc").encode(t), ErrInvalidParameter, nil, Register},
		{"negative lt", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "lt=-1").encode(t), ErrInvalidParameter, nil, Register},
		{"signed lt", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "lt=+5").encode(t), ErrInvalidParameter, nil, Register},
		{"lt with space", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "lt= 5").encode(t), ErrInvalidParameter, nil, Register},
		{"fractional lt", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "lt=1.5").encode(t), ErrInvalidParameter, nil, Register},
		{"lt beyond 32 bits", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "lt=4294967296").encode(t), ErrInvalidParameter, nil, Register},
		{"huge lt", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "lt=99999999999999999999999").encode(t), ErrInvalidParameter, nil, Register},
		{"empty lt", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "lt=").encode(t), ErrInvalidParameter, nil, Register},
		{"non-numeric lt on update", Inspector{}, req(codes.POST, "/rd/5a3f", "lt=x").encode(t), ErrInvalidParameter, nil, Update},
		{"version without minor", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "lwm2m=1").encode(t), ErrInvalidParameter, nil, Register},
		{"version not numeric", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "lwm2m=a.b").encode(t), ErrInvalidParameter, nil, Register},
		{"empty version", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "lwm2m=").encode(t), ErrInvalidParameter, nil, Register},
		{"unknown binding", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "b=X").encode(t), ErrInvalidParameter, nil, Register},
		{"lowercase binding", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "b=u").encode(t), ErrInvalidParameter, nil, Register},
		{"empty binding", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "b=").encode(t), ErrInvalidParameter, nil, Register},
		{"empty sms", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "sms=").encode(t), ErrInvalidParameter, nil, Register},
		{"Q with a value", Inspector{}, req(codes.POST, "/rd", "ep=dev1", "Q=1").encode(t), ErrInvalidParameter, nil, Register},
		{"non-numeric pct", Inspector{}, req(codes.POST, "/bs", "ep=dev1", "pct=json").encode(t), ErrInvalidParameter, nil, BootstrapRequest},
		{"pct beyond 16 bits", Inspector{}, req(codes.POST, "/bs", "ep=dev1", "pct=65536").encode(t), ErrInvalidParameter, nil, BootstrapRequest},
		{"slash inside a segment", Inspector{}, req(codes.POST, "").withPath("rd/5a3f").encode(t), ErrInvalidPath, nil, Other},
		{"slash inside the rd segment", Inspector{}, req(codes.POST, "", "ep=dev2").withPath("rd/").encode(t), ErrInvalidPath, nil, Other},
		{"dot-dot segment", Inspector{}, req(codes.POST, "").withPath("x", "..", "rd", "5a3f").encode(t), ErrInvalidPath, nil, Other},
		{"dot segment", Inspector{}, req(codes.DELETE, "").withPath("rd", ".", "5a3f").encode(t), ErrInvalidPath, nil, Other},
		{"leading empty segment", Inspector{}, req(codes.POST, "").withPath("", "rd", "5a3f").encode(t), ErrInvalidPath, nil, Other},
		{"inner empty segment", Inspector{}, req(codes.POST, "").withPath("rd", "", "5a3f").encode(t), ErrInvalidPath, nil, Other},
		{"trailing empty segment", Inspector{}, req(codes.POST, "", "ep=dev1").withPath("rd", "").encode(t), ErrInvalidPath, nil, Other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.in.Inspect(tt.b)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Inspect err = %v, want %v", err, tt.want)
			}
			if tt.cause != nil && !errors.Is(err, tt.cause) {
				t.Errorf("Inspect err = %v, want cause %v", err, tt.cause)
			}
			var ie *InspectError
			if !errors.As(err, &ie) {
				t.Fatalf("err %T is not an *InspectError", err)
			}
			if m.Kind != tt.kind {
				t.Errorf("Kind = %v, want %v", m.Kind, tt.kind)
			}
			if strings.Contains(err.Error(), "dev1") || strings.Contains(err.Error(), "dev2") || len(err.Error()) > 200 {
				t.Errorf("error text %q carries a value from the datagram", err.Error())
			}
			if m.Path != "" || m.Params != (Params{}) {
				t.Errorf("failed message has Path %q Params %+v", m.Path, m.Params)
			}
			if tt.kind != Invalid {
				// A well-formed request: the header is there to answer it.
				if m.Code != codes.POST && m.Code != codes.DELETE || string(m.Token) != "tok1" || m.MessageID != 0x1234 {
					t.Errorf("header not kept: %v %q %#x", m.Code, m.Token, m.MessageID)
				}
			}
		})
	}
}

func (c coap) withPath(segs ...string) coap { c.path = segs; return c }

func hexBytes(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// TestInspectTokenLength checks that TKL 9 to 15, reserved by RFC 7252 §3,
// is a message format error, and 0 to 8 are accepted.
func TestInspectTokenLength(t *testing.T) {
	for tkl := range 16 {
		b := append([]byte{0x40 | byte(tkl), byte(codes.GET), 0x00, 0x01}, bytes.Repeat([]byte{0xab}, tkl)...)
		m, err := Inspect(b)
		if tkl <= 8 {
			if err != nil || len(m.Token) != tkl || m.Kind != Other {
				t.Errorf("TKL %d: %v, token %d bytes, %v", tkl, err, len(m.Token), m.Kind)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) || !errors.Is(err, message.ErrInvalidTokenLen) {
			t.Errorf("TKL %d: err = %v, want ErrMalformed (%v)", tkl, err, message.ErrInvalidTokenLen)
		}
		if m.Kind != Invalid || m.Token != nil {
			t.Errorf("TKL %d: Kind %v, Token %x", tkl, m.Kind, m.Token)
		}
		if m.Type != message.Confirmable || m.MessageID != 1 {
			t.Errorf("TKL %d: header %v %d not reported", tkl, m.Type, m.MessageID)
		}
	}
}

// TestInspectCaptured decodes the datagrams other implementations sent
// (testdata/README.md).
func TestInspectCaptured(t *testing.T) {
	tests := []struct {
		file     string
		typ      message.Type
		code     codes.Code
		mid      uint16
		token    string // hex
		kind     Kind
		path     string
		location string
		params   Params
	}{
		{"register-block1-wakaama", message.Confirmable, codes.POST, 0xb269, "69b2af5c", Register, "/rd", "",
			Params{Endpoint: "apa", Lifetime: 300 * time.Second, Version: "1.1", Binding: "U"}},
		{"continue-block1-wakaama", message.Acknowledgement, codes.Continue, 0xb269, "69b2af5c", Response, "", "", Params{}},
		{"register-block2-wakaama", message.Confirmable, codes.POST, 0xb26a, "69b2af5c", Register, "/rd", "",
			Params{Endpoint: "apa", Lifetime: 300 * time.Second, Version: "1.1", Binding: "U"}},
		{"created-block1-wakaama", message.Acknowledgement, codes.Created, 0xb26a, "69b2af5c", Response, "", "/rd/0", Params{}},
		{"register-wakaama", message.Confirmable, codes.POST, 0x96b1, "b196d4fd", Register, "/rd", "",
			Params{Endpoint: "testlwm2mclient", Lifetime: 300 * time.Second, Version: "1.1", Binding: "U"}},
		{"created-wakaama", message.Acknowledgement, codes.Created, 0x96b1, "b196d4fd", Response, "", "/rd/0", Params{}},
		{"deregister-wakaama", message.Confirmable, codes.DELETE, 0x96b2, "b296ecfd", Deregister, "/rd/0", "", Params{}},
		{"update-wakaama-issue102", message.Confirmable, codes.POST, 0x61ed, "ed61a045", Update, "/rd/dfZXlerHEl", "", Params{}},
		{"badrequest-wakaama-issue102", message.Acknowledgement, codes.BadRequest, 0x61ed, "ed61a045", Response, "", "", Params{}},
		{"bootstrap-request-wakaama", message.Confirmable, codes.POST, 0xb268, "68b2af5c", BootstrapRequest, "/bs", "",
			Params{Endpoint: "apa", PreferredFormat: message.AppSenmlJSON, HasPreferredFormat: true}},
		{"changed-bootstrap-wakaama", message.Acknowledgement, codes.Changed, 0xb268, "68b2af5c", Response, "", "", Params{}},
		{"bootstrap-delete-wakaama", message.Confirmable, codes.DELETE, 0xd9d9, "d9d9af5c", Other, "", "", Params{}},
		{"bootstrap-write-wakaama", message.Confirmable, codes.PUT, 0xd9db, "dbd9af5c", Other, "", "", Params{}},
		{"bootstrap-finish-wakaama", message.Confirmable, codes.POST, 0xd9dd, "ddd9af5c", BootstrapFinish, "/bs", "", Params{}},
		{"observe-bc68", message.Confirmable, codes.GET, 0xf4a6, "00000000", Other, "", "", Params{}},
		{"notify-ack-bc68", message.Acknowledgement, codes.Content, 0xf4a6, "00000000", Notify, "", "", Params{}},
		{"content-non-bc68", message.NonConfirmable, codes.Content, 0x2866, "00000000", Response, "", "", Params{}},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			m, err := Inspect(captured(t, tt.file))
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if m.Type != tt.typ || m.Code != tt.code || m.MessageID != tt.mid || hex.EncodeToString(m.Token) != tt.token {
				t.Errorf("header = %v %v %#x %x, want %v %v %#x %s", m.Type, m.Code, m.MessageID, m.Token, tt.typ, tt.code, tt.mid, tt.token)
			}
			if m.Kind != tt.kind || m.Path != tt.path || m.Location != tt.location || m.Params != tt.params {
				t.Errorf("got %v %q %q %+v\nwant %v %q %q %+v", m.Kind, m.Path, m.Location, m.Params, tt.kind, tt.path, tt.location, tt.params)
			}
		})
	}
	for name := range allCaptured(t) {
		if !seen[name] {
			t.Errorf("testdata/%s.hex has no expectation here", name)
		}
	}
}

func TestInspectSegments(t *testing.T) {
	m := req(codes.POST, "/rd/a/b").inspect(t)
	if got := m.PathSegments(); strings.Join(got, "|") != "rd|a|b" {
		t.Errorf("PathSegments = %q", got)
	}
	c := resp(codes.Created).withLocation("/rd/5a3f").inspect(t)
	if got := c.LocationSegments(); strings.Join(got, "|") != "rd|5a3f" {
		t.Errorf("LocationSegments = %q", got)
	}
	if got := (Message{}).PathSegments(); got != nil {
		t.Errorf("PathSegments of zero Message = %q", got)
	}
}

// TestInspectManyOptions covers messages with more options than the pooled
// buffer holds, and that the pool is not corrupted by them.
func TestInspectManyOptions(t *testing.T) {
	q := []string{"ep=dev1"}
	for i := range 3 * pooledOptions {
		q = append(q, "x"+strings.Repeat("y", i)+"=1")
	}
	for range 3 {
		m, err := Inspect(req(codes.POST, "/rd", q...).encode(t))
		if err != nil || m.Kind != Register || m.Params.Endpoint != "dev1" {
			t.Fatalf("many options: %v %v %+v", err, m.Kind, m.Params)
		}
		m = req(codes.POST, "/rd/5a3f").inspect(t)
		if m.Kind != Update || m.Path != "/rd/5a3f" {
			t.Fatalf("after many options: %v %q", m.Kind, m.Path)
		}
	}
}

// TestInspectCopiesStrings checks that Path, Location and Params survive
// the caller reusing its receive buffer (only Token aliases it).
func TestInspectCopiesStrings(t *testing.T) {
	b := req(codes.POST, "/rd", "ep=dev1", "lwm2m=1.1", "b=U", "sms=123").encode(t)
	m, err := Inspect(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if m.Path != "/rd" || m.Params.Endpoint != "dev1" || m.Params.Version != "1.1" || m.Params.Binding != "U" || m.Params.SMS != "123" {
		t.Errorf("strings changed with the buffer: %q %+v", m.Path, m.Params)
	}
	c := resp(codes.Created).withLocation("/rd/5a3f").encode(t)
	mc, _ := Inspect(c)
	clear(c)
	if mc.Location != "/rd/5a3f" {
		t.Errorf("Location changed with the buffer: %q", mc.Location)
	}
}

func TestInspectAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	tests := []struct {
		name string
		b    []byte
		max  float64
	}{
		{"notify", captured(t, "notify-ack-bc68"), 0},
		{"observe request", captured(t, "observe-bc68"), 0},
		{"write", captured(t, "bootstrap-write-wakaama"), 0},
		{"ping", []byte{0x40, 0, 0, 1}, 0},
		{"register", captured(t, "register-wakaama"), 1},
		{"update", captured(t, "update-wakaama-issue102"), 1},
		{"created", captured(t, "created-wakaama"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, func() { _, _ = Inspect(tt.b) }); got > tt.max {
				t.Errorf("Inspect allocates %v times, want at most %v", got, tt.max)
			}
		})
	}
}

func TestKindString(t *testing.T) {
	for k := Invalid; k <= Other; k++ {
		if s := k.String(); s == "" || strings.HasPrefix(s, "Kind(") {
			t.Errorf("Kind %d has no name", k)
		}
	}
	if s := Kind(200).String(); s != "Kind(200)" {
		t.Errorf("Kind(200).String() = %q", s)
	}
}

func BenchmarkInspect(b *testing.B) {
	for _, name := range []string{
		"notify-ack-bc68",         // the hot path: device notifications
		"content-non-bc68",        // plain response
		"observe-bc68",            // backend request
		"register-wakaama",        // Register with a 140-byte payload
		"update-wakaama-issue102", // periodic Update
		"created-wakaama",         // the backend's answer to a Register
	} {
		d := captured(b, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(d)))
			for b.Loop() {
				if _, err := Inspect(d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
