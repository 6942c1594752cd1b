package lwm2m

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message/codes"
)

var sentinels = []error{ErrMalformed, ErrMissingEndpoint, ErrEndpointTooLong, ErrDuplicateParameter, ErrInvalidParameter, ErrInvalidPath}

// fuzzSeeds are encoded messages added to the captured datagrams.
func fuzzSeeds(tb testing.TB) [][]byte {
	var out [][]byte
	for _, b := range allCaptured(tb) {
		out = append(out, b)
	}
	for _, c := range []coap{
		req(codes.POST, "/rd", "ep=dev1", "lt=300", "lwm2m=1.1", "b=UQ", "sms=123", "Q"),
		req(codes.POST, "/rd/5a3f", "lt=60"),
		req(codes.DELETE, "/rd/5a3f"),
		req(codes.POST, "/bs", "ep=dev1", "pct=11543"),
		req(codes.POST, "/dp"),
		req(codes.POST, "/rd", "ep=dev1", "ep=dev2"),
		req(codes.POST, "").withPath("x", "..", "rd", "5a3f"),
		resp(codes.Created).withLocation("/rd/5a3f"),
		resp(codes.Content).withObserve(),
	} {
		out = append(out, c.encode(tb))
	}
	return append(out, nil, []byte{0x40, 0, 0, 1}, []byte{0x4f, 1, 0, 1})
}

func FuzzInspect(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		m, err := Inspect(data)
		if !bytes.Equal(data, orig) {
			t.Fatal("Inspect modified its input")
		}
		if err != nil {
			checkInspectError(t, m, err)
			return
		}
		checkMessage(t, data, m)

		// Same result again, and the strings do not alias the input.
		buf := bytes.Clone(data)
		m2, err := Inspect(buf)
		if err != nil {
			t.Fatalf("second Inspect: %v", err)
		}
		clear(buf)
		if m2.Kind != m.Kind || m2.Path != m.Path || m2.Location != m.Location || m2.Params != m.Params {
			t.Fatalf("not deterministic or aliases input: %+v vs %+v", m, m2)
		}

		// L4: a fresh binding forwards everything that is not registration
		// or bootstrap; L1: it forwards a Register/Bootstrap-Request with
		// its own ep.
		v := NewBinding("dev1").FromDevice(m)
		switch m.Kind {
		case Notify, Response, Empty, Send, Other:
			if v != forward {
				t.Fatalf("%v from the device not forwarded: %+v", m.Kind, v)
			}
		case Register, BootstrapRequest:
			if own := NewBinding(m.Params.Endpoint).FromDevice(m); own != forward {
				t.Fatalf("%v with the bound ep not forwarded: %+v", m.Kind, own)
			}
		}
		if m.Kind.IsRequest() {
			checkReply(t, m)
		} else if _, err := Reply(m, codes.Forbidden); !errors.Is(err, ErrNotRequest) {
			t.Fatalf("Reply to a %v: %v", m.Kind, err)
		}
	})
}

func checkInspectError(t *testing.T, m Message, err error) {
	t.Helper()
	var ie *InspectError
	if !errors.As(err, &ie) {
		t.Fatalf("error %T %v is not an *InspectError", err, err)
	}
	known := false
	for _, s := range sentinels {
		known = known || ie.Err == s
	}
	if !known {
		t.Fatalf("unknown sentinel %v", ie.Err)
	}
	if m.Path != "" || m.Location != "" || m.Params != (Params{}) {
		t.Fatalf("failed message carries data: %+v", m)
	}
	v := NewBinding("dev1").FromDevice(m)
	if errors.Is(err, ErrMalformed) {
		if m.Kind != Invalid || m.Token != nil || v.Action != Drop {
			t.Fatalf("malformed: Kind %v Token %x verdict %+v", m.Kind, m.Token, v)
		}
		return
	}
	if !m.Kind.IsRequest() || v.Action != Reject || v.Code != codes.BadRequest {
		t.Fatalf("%v: Kind %v verdict %+v", err, m.Kind, v)
	}
	checkReply(t, m)
}

func checkMessage(t *testing.T, data []byte, m Message) {
	t.Helper()
	class := m.Code >> 5
	if len(m.Token) > 8 {
		t.Fatalf("token of %d bytes", len(m.Token))
	}
	switch m.Kind {
	case Invalid:
		t.Fatal("Kind Invalid without error")
	case Empty:
		if m.Code != codes.Empty || len(data) != 4 || len(m.Token) != 0 {
			t.Fatalf("Empty: %v, %d bytes", m.Code, len(data))
		}
	case Notify:
		if !m.Observe || (m.Code != codes.Content && m.Code != codes.Valid) {
			t.Fatalf("Notify: %v observe=%v", m.Code, m.Observe)
		}
	case Response:
		if class != 2 && class != 4 && class != 5 {
			t.Fatalf("Response with code %v", m.Code)
		}
	default:
		if class != 0 || m.Code == codes.Empty {
			t.Fatalf("%v with code %v", m.Kind, m.Code)
		}
	}
	if m.Location != "" && (m.Code != codes.Created || !strings.HasPrefix(m.Location, "/")) {
		t.Fatalf("Location %q on %v", m.Location, m.Code)
	}
	prefix := map[Kind]string{Register: "/rd", Update: "/rd/", Deregister: "/rd/", BootstrapRequest: "/bs", BootstrapFinish: "/bs", Send: "/dp"}[m.Kind]
	if !strings.HasPrefix(m.Path, prefix) || (prefix == "") != (m.Path == "") {
		t.Fatalf("%v with Path %q", m.Kind, m.Path)
	}
	if m.Kind == Register || m.Kind == BootstrapRequest {
		ep := m.Params.Endpoint
		if ep == "" || len(ep) > DefaultMaxEndpoint || strings.Contains(ep, "&") {
			t.Fatalf("%v with ep %q", m.Kind, ep)
		}
	}
	if m.Params.Lifetime < 0 {
		t.Fatalf("negative lifetime %v", m.Params.Lifetime)
	}
}

func checkReply(t *testing.T, m Message) {
	t.Helper()
	out, err := Reply(m, codes.Forbidden)
	if err != nil {
		t.Fatalf("Reply to %v: %v", m.Kind, err)
	}
	r, err := Inspect(out)
	if err != nil || r.Kind != Response || r.Code != codes.Forbidden || !bytes.Equal(r.Token, m.Token) {
		t.Fatalf("reply %x: %v %v %v", out, err, r.Kind, r.Code)
	}
}

// FuzzBinding drives one Binding with a script of datagrams: each frame is
// a direction byte (even: from the device, odd: from the backend), a length
// byte and the datagram.
func FuzzBinding(f *testing.F) {
	frame := func(fromBackend bool, b []byte) []byte {
		d := byte(0)
		if fromBackend {
			d = 1
		}
		return append([]byte{d, byte(len(b))}, b...)
	}
	script := func(steps ...[]byte) []byte { return bytes.Join(steps, nil) }
	c := func(name string) []byte { return captured(f, name) }
	f.Add("apa", script(
		frame(false, c("register-block1-wakaama")), frame(true, c("continue-block1-wakaama")),
		frame(false, c("register-block2-wakaama")), frame(true, c("created-block1-wakaama")),
		frame(false, req(codes.POST, "/rd/0", "lt=60").encode(f)), frame(true, resp(codes.Changed).encode(f)),
		frame(false, req(codes.DELETE, "/rd/0").encode(f)), frame(true, resp(codes.Deleted).encode(f)),
	))
	f.Add("testlwm2mclient", script(
		frame(false, c("register-wakaama")), frame(true, c("created-wakaama")),
		frame(false, c("update-wakaama-issue102")), frame(false, c("deregister-wakaama")),
		frame(false, c("notify-ack-bc68")),
	))
	f.Add("apa", script(
		frame(false, c("bootstrap-request-wakaama")), frame(true, c("changed-bootstrap-wakaama")),
		frame(true, c("bootstrap-write-wakaama")), frame(true, c("bootstrap-finish-wakaama")),
		frame(false, c("bootstrap-finish-wakaama")),
	))
	f.Add("dev1", script(
		frame(false, req(codes.POST, "/rd", "ep=dev2").withToken("x").encode(f)),
		frame(true, resp(codes.Created).withToken("x").withLocation("/rd/1").encode(f)),
		frame(false, req(codes.POST, "/rd/1").encode(f)),
	))
	for _, b := range fuzzSeeds(f) {
		if len(b) < 256 {
			f.Add("dev1", frame(false, b))
		}
	}
	f.Fuzz(func(t *testing.T, endpoint string, script []byte) {
		b := NewBinding(endpoint)
		forwardedRegisters := map[string]bool{}
		for len(script) >= 2 {
			fromBackend, n := script[0]&1 == 1, int(script[1])
			script = script[2:]
			n = min(n, len(script))
			data := script[:n]
			script = script[n:]

			m, err := Inspect(data)
			loc, lt, ok := b.Registered()
			if fromBackend {
				b.FromBackend(m)
				nloc, nlt, nok := b.Registered()
				if nok && nloc != loc {
					// A new location comes only from a 2.01 Created
					// answering a Register this binding forwarded.
					if err != nil || m.Code != codes.Created || m.Location != nloc || !forwardedRegisters[string(m.Token)] {
						t.Fatalf("learned %q from %v %v %q token %x", nloc, m.Kind, m.Code, m.Location, m.Token)
					}
				}
				if nok && !strings.HasPrefix(nloc, "/rd/") {
					t.Fatalf("registered at %q", nloc)
				}
				if nok != (nloc != "") || nlt < 0 || (!nok && nlt != 0) {
					t.Fatalf("Registered() = %q %v %v", nloc, nlt, nok)
				}
				continue
			}

			v := b.FromDevice(m)
			if nloc, nlt, _ := b.Registered(); nloc != loc || nlt != lt {
				t.Fatalf("FromDevice changed the registration")
			}
			switch v.Action {
			case Forward:
				if err != nil || v != forward {
					t.Fatalf("forwarded %v (err %v): %+v", m.Kind, err, v)
				}
			case Reject:
				if !m.Kind.IsRequest() || (v.Code != codes.Forbidden && v.Code != codes.BadRequest) {
					t.Fatalf("rejected %v with %+v", m.Kind, v)
				}
				checkReply(t, m)
			case Drop:
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("dropped %v (err %v)", m.Kind, err)
				}
			default:
				t.Fatalf("verdict %+v", v)
			}
			switch m.Kind {
			case Notify, Response, Empty, Send, Other:
				// L4: never rejected for what it is, only for being malformed.
				if v.Action == Reject && err == nil {
					t.Fatalf("L4: %v rejected: %+v", m.Kind, v)
				}
			case Register, BootstrapRequest:
				if v.Action == Forward && m.Params.Endpoint != endpoint {
					t.Fatalf("L1: %v with ep %q forwarded for %q", m.Kind, m.Params.Endpoint, endpoint)
				}
				if v.Action == Forward && m.Kind == Register {
					forwardedRegisters[string(m.Token)] = true
				}
			case BootstrapFinish:
				if v.Action == Forward {
					t.Fatal("L1: POST /bs without ep forwarded")
				}
			case Update, Deregister:
				if v.Action == Forward && (!ok || m.Path != loc) {
					t.Fatalf("L2: %v %q forwarded, registered at %q (%v)", m.Kind, m.Path, loc, ok)
				}
			}
		}
	})
}
