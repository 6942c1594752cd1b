package lwm2m

import (
	"bytes"
	"errors"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

func TestReply(t *testing.T) {
	tests := []struct {
		name     string
		req      coap
		code     codes.Code
		wantType message.Type
		sameMID  bool
		payload  string
	}{
		{"CON register rejected L1", req(codes.POST, "/rd", "ep=secret-endpoint-name"), codes.Forbidden, message.Acknowledgement, true, "forbidden by gateway policy"},
		{"CON update rejected L2", req(codes.POST, "/rd/5a3f"), codes.Forbidden, message.Acknowledgement, true, "forbidden by gateway policy"},
		{"CON bad request", req(codes.POST, "/rd", "ep=x", "lt=1"), codes.BadRequest, message.Acknowledgement, true, "bad request"},
		{"NON register rejected", req(codes.POST, "/rd", "ep=secret-endpoint-name").withType(message.NonConfirmable), codes.Forbidden, message.NonConfirmable, false, "forbidden by gateway policy"},
		{"empty token", req(codes.DELETE, "/rd/1").withToken(""), codes.Forbidden, message.Acknowledgement, true, "forbidden by gateway policy"},
		{"8-byte token", req(codes.POST, "/bs", "ep=x").withToken("12345678"), codes.Forbidden, message.Acknowledgement, true, "forbidden by gateway policy"},
		{"not found", req(codes.POST, "/rd/gone"), codes.NotFound, message.Acknowledgement, true, "registration not found"},
		{"unavailable", req(codes.POST, "/dp"), codes.ServiceUnavailable, message.Acknowledgement, true, "backend unavailable"},
		{"other code has no payload", req(codes.GET, "/3/0"), codes.GatewayTimeout, message.Acknowledgement, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.req.inspect(t)
			out, err := AppendReply(nil, in, tt.code, 0xbeef)
			if err != nil {
				t.Fatalf("AppendReply: %v", err)
			}
			got, err := Inspect(out)
			if err != nil {
				t.Fatalf("reply does not decode: %v", err)
			}
			if got.Type != tt.wantType || got.Code != tt.code || !bytes.Equal(got.Token, in.Token) || got.Kind != Response {
				t.Errorf("reply %v %v %q %v, want %v %v %q Response", got.Type, got.Code, got.Token, got.Kind, tt.wantType, tt.code, in.Token)
			}
			wantMID := uint16(0xbeef)
			if tt.sameMID {
				wantMID = in.MessageID
			}
			if got.MessageID != wantMID {
				t.Errorf("MessageID %#x, want %#x", got.MessageID, wantMID)
			}
			if !bytes.HasSuffix(out, []byte(tt.payload)) || (tt.payload == "" && bytes.IndexByte(out, 0xff) >= 0) {
				t.Errorf("payload of %x, want %q", out, tt.payload)
			}
			if bytes.Contains(out, []byte("secret")) {
				t.Errorf("reply %q echoes the endpoint name", out)
			}
		})
	}
}

// TestReplyRetryAfter: the gateway's 5.03 while a backend is unreachable
// carries Max-Age, the back-off a CoAP client honours (RFC 7252 §5.9.3.4).
func TestReplyRetryAfter(t *testing.T) {
	in := req(codes.POST, "/rd/5a3f").inspect(t)
	out, err := ReplyRetryAfter(in, 30)
	if err != nil {
		t.Fatal(err)
	}
	m := message.Message{Options: make(message.Options, 0, 8)}
	if _, err := coder.DefaultCoder.Decode(out, &m); err != nil {
		t.Fatal(err)
	}
	if m.Code != codes.ServiceUnavailable || m.Type != message.Acknowledgement || int32(in.MessageID) != m.MessageID {
		t.Fatalf("reply %v %v mid %d", m.Code, m.Type, m.MessageID)
	}
	age, err := m.Options.GetUint32(message.MaxAge)
	if err != nil || age != 30 {
		t.Fatalf("Max-Age %d, %v; want 30", age, err)
	}
	if _, err := ReplyRetryAfter(Message{Kind: Notify}, 30); err == nil {
		t.Fatal("5.03 built for a notification")
	}
}

func TestReplyRandomMessageIDForNON(t *testing.T) {
	in := req(codes.POST, "/rd", "ep=x").withType(message.NonConfirmable).inspect(t)
	seen := map[uint16]bool{}
	for range 20 {
		out, err := Reply(in, codes.Forbidden)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Inspect(out)
		if err != nil || got.Type != message.NonConfirmable {
			t.Fatalf("%v %v", err, got.Type)
		}
		seen[got.MessageID] = true
	}
	if len(seen) < 2 {
		t.Errorf("20 NON replies used %d Message IDs", len(seen))
	}
	con := req(codes.POST, "/rd", "ep=x").inspect(t)
	out, err := Reply(con, codes.Forbidden)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := Inspect(out); got.MessageID != con.MessageID || got.Type != message.Acknowledgement {
		t.Errorf("CON reply %v %#x", got.Type, got.MessageID)
	}
}

func TestAppendReplyKeepsPrefix(t *testing.T) {
	in := req(codes.POST, "/rd", "ep=x").inspect(t)
	out, err := AppendReply([]byte("hdr"), in, codes.Forbidden, 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(out[:3]) != "hdr" {
		t.Errorf("prefix lost: %q", out)
	}
	if _, err := Inspect(out[3:]); err != nil {
		t.Errorf("appended reply: %v", err)
	}
}

func TestReplyRefuses(t *testing.T) {
	valid := req(codes.POST, "/rd", "ep=x").inspect(t)
	tests := []struct {
		name string
		m    Message
		code codes.Code
	}{
		{"notify", resp(codes.Content).withObserve().inspect(t), codes.Forbidden},
		{"response", resp(codes.Changed).inspect(t), codes.Forbidden},
		{"empty", coap{mid: 1}.inspect(t), codes.Forbidden},
		{"invalid", Message{}, codes.Forbidden},
		{"request code as answer", valid, codes.GET},
		{"empty code as answer", valid, codes.Empty},
		{"reserved class as answer", valid, codes.Code(3 << 5)},
		{"signaling code as answer", valid, codes.Ping},
		{"request in ACK", Message{Kind: Register, Type: message.Acknowledgement, Code: codes.POST}, codes.Forbidden},
		{"token too long", Message{Kind: Register, Code: codes.POST, Token: make([]byte, 9)}, codes.Forbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if out, err := Reply(tt.m, tt.code); !errors.Is(err, ErrNotRequest) {
				t.Errorf("Reply = %x, %v, want ErrNotRequest", out, err)
			}
		})
	}
}
