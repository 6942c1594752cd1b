package lwm2m

import (
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

var (
	rejectForbiddenL1  = Verdict{Action: Reject, Code: codes.Forbidden, Rule: "L1"}
	rejectBadRequestL1 = Verdict{Action: Reject, Code: codes.BadRequest, Rule: "L1"}
	rejectForbiddenL2  = Verdict{Action: Reject, Code: codes.Forbidden, Rule: "L2"}
)

// registered returns a Binding for "dev1" registered at /rd/5a3f with lt=300,
// through a real Register and 2.01 Created exchange.
func registered(t *testing.T) *Binding {
	t.Helper()
	b := NewBinding("dev1")
	if v := b.FromDevice(req(codes.POST, "/rd", "ep=dev1", "lt=300").withToken("reg").inspect(t)); v != forward {
		t.Fatalf("Register: %+v", v)
	}
	b.FromBackend(resp(codes.Created).withToken("reg").withLocation("/rd/5a3f").inspect(t))
	if loc, lt, ok := b.Registered(); !ok || loc != "/rd/5a3f" || lt != 300*time.Second {
		t.Fatalf("Registered() = %q %v %v", loc, lt, ok)
	}
	return b
}

func TestBindingL1RegisterBoundEndpoint(t *testing.T) {
	b := NewBinding("dev1")
	if v := b.FromDevice(req(codes.POST, "/rd", "ep=dev1").inspect(t)); v != forward {
		t.Errorf("verdict = %+v, want forward", v)
	}
}

func TestBindingL1RegisterWrongEndpoint(t *testing.T) {
	tests := []struct{ name, ep string }{
		{"other device", "dev2"},
		{"case differs", "DEV1"},
		{"prefix", "dev"},
		{"longer", "dev1x"},
		{"trailing space", "dev1 "},
		{"trailing NUL", "dev1\x00"},
		{"urn form", "urn:dev:ops:dev1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBinding("dev1")
			if v := b.FromDevice(req(codes.POST, "/rd", "ep="+tt.ep).inspect(t)); v != rejectForbiddenL1 {
				t.Errorf("verdict = %+v, want %+v", v, rejectForbiddenL1)
			}
		})
	}
}

func TestBindingL1RegisterMissingEndpoint(t *testing.T) {
	tests := []struct {
		name string
		msg  coap
	}{
		{"no query", req(codes.POST, "/rd")},
		{"no ep", req(codes.POST, "/rd", "lt=60")},
		{"empty ep", req(codes.POST, "/rd", "ep=")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Inspect(tt.msg.encode(t))
			if err == nil {
				t.Fatal("Inspect accepted a Register without ep")
			}
			// The caller ignores err: the binding still refuses.
			if v := NewBinding("dev1").FromDevice(m); v.Action != Reject || v.Code != codes.BadRequest {
				t.Errorf("verdict = %+v, want 4.00", v)
			}
		})
	}
	// A Message built by hand, without Inspect.
	if v := NewBinding("dev1").FromDevice(Message{Kind: Register}); v != rejectBadRequestL1 {
		t.Errorf("hand-built Register without ep: verdict = %+v, want %+v", v, rejectBadRequestL1)
	}
}

func TestBindingL1RegisterInvalidParametersNotForwarded(t *testing.T) {
	// The ep is right, but another parameter is bad: forwarding it would let
	// the backend interpret what the gateway could not.
	for _, q := range [][]string{
		{"ep=dev1", "ep=dev2"},
		{"ep=dev1", "EP=dev2"},
		{"ep=dev1&ep=dev2"},
		{"ep=dev1", "lt=soon"},
	} {
		m, err := Inspect(req(codes.POST, "/rd", q...).encode(t))
		if err == nil {
			t.Fatalf("%q: Inspect accepted it", q)
		}
		if v := NewBinding("dev1").FromDevice(m); v.Action != Reject || v.Code != codes.BadRequest {
			t.Errorf("%q: verdict = %+v, want 4.00", q, v)
		}
	}
}

func TestBindingL1BootstrapRequest(t *testing.T) {
	tests := []struct {
		name string
		msg  coap
		want Verdict
	}{
		{"bound endpoint", req(codes.POST, "/bs", "ep=dev1", "pct=110"), forward},
		{"wrong endpoint", req(codes.POST, "/bs", "ep=dev2"), rejectForbiddenL1},
		{"bootstrap-finish shape from the device", req(codes.POST, "/bs"), rejectBadRequestL1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v := NewBinding("dev1").FromDevice(tt.msg.inspect(t)); v != tt.want {
				t.Errorf("verdict = %+v, want %+v", v, tt.want)
			}
		})
	}
}

func TestBindingL1BootstrapRequestWrongEndpoint(t *testing.T) {
	b := NewBinding("dev1")
	m, err := Inspect(captured(t, "bootstrap-request-wakaama")) // ep=apa
	if err != nil {
		t.Fatal(err)
	}
	if v := b.FromDevice(m); v != rejectForbiddenL1 {
		t.Errorf("verdict = %+v, want %+v", v, rejectForbiddenL1)
	}
	if v := NewBinding("apa").FromDevice(m); v != forward {
		t.Errorf("bound endpoint: verdict = %+v, want forward", v)
	}
}

func TestBindingL1BootstrapRequestMissingEndpoint(t *testing.T) {
	m, err := Inspect(req(codes.POST, "/bs", "pct=110").encode(t))
	if err == nil {
		t.Fatal("Inspect accepted a Bootstrap-Request without ep")
	}
	if v := NewBinding("dev1").FromDevice(m); v.Action != Reject || v.Code != codes.BadRequest {
		t.Errorf("verdict = %+v, want 4.00", v)
	}
}

func TestBindingL1UpdateWithForeignEndpoint(t *testing.T) {
	b := registered(t)
	if v := b.FromDevice(req(codes.POST, "/rd/5a3f", "ep=dev2").inspect(t)); v != rejectForbiddenL1 {
		t.Errorf("verdict = %+v, want %+v", v, rejectForbiddenL1)
	}
	if v := b.FromDevice(req(codes.POST, "/rd/5a3f", "ep=dev1").inspect(t)); v != forward {
		t.Errorf("own ep: verdict = %+v, want forward", v)
	}
}

func TestBindingL1RejectedRegisterLearnsNothing(t *testing.T) {
	b := NewBinding("dev1")
	b.FromDevice(req(codes.POST, "/rd", "ep=dev2").withToken("evil").inspect(t))
	b.FromBackend(resp(codes.Created).withToken("evil").withLocation("/rd/other").inspect(t))
	if loc, _, ok := b.Registered(); ok {
		t.Errorf("learned %q from the answer to a rejected Register", loc)
	}
}

func TestBindingL2UpdateBeforeRegistration(t *testing.T) {
	b := NewBinding("dev1")
	for _, m := range []coap{req(codes.POST, "/rd/5a3f"), req(codes.DELETE, "/rd/5a3f")} {
		if v := b.FromDevice(m.inspect(t)); v != rejectForbiddenL2 {
			t.Errorf("%v: verdict = %+v, want %+v", m.code, v, rejectForbiddenL2)
		}
	}
}

func TestBindingL2UpdateOwnLocation(t *testing.T) {
	b := registered(t)
	if v := b.FromDevice(req(codes.POST, "/rd/5a3f", "lt=600", "b=UQ").inspect(t)); v != forward {
		t.Errorf("verdict = %+v, want forward", v)
	}
}

func TestBindingL2UpdateOtherLocation(t *testing.T) {
	for _, path := range []string{"/rd/other", "/rd/5A3F", "/rd/5a3f/x", "/rd/5a3", "/rd/5a3f0"} {
		t.Run(path, func(t *testing.T) {
			b := registered(t)
			if v := b.FromDevice(req(codes.POST, path).inspect(t)); v != rejectForbiddenL2 {
				t.Errorf("Update: verdict = %+v, want %+v", v, rejectForbiddenL2)
			}
			if v := b.FromDevice(req(codes.DELETE, path).inspect(t)); v != rejectForbiddenL2 {
				t.Errorf("De-register: verdict = %+v, want %+v", v, rejectForbiddenL2)
			}
		})
	}
}

func TestBindingL2PathTricksNotForwarded(t *testing.T) {
	// Paths a lenient backend could normalise into another device's
	// registration never reach it.
	b := registered(t)
	for _, segs := range [][]string{
		{"rd/other"},
		{"x", "..", "rd", "other"},
		{"", "rd", "other"},
		{"rd", ".", "other"},
		{"rd", "", "other"},
	} {
		m, err := Inspect(req(codes.POST, "").withPath(segs...).encode(t))
		if err == nil {
			t.Errorf("%q: Inspect accepted it", segs)
		}
		if v := b.FromDevice(m); v.Action == Forward {
			t.Errorf("%q: forwarded", segs)
		}
	}
}

func TestBindingL2DeregisterOwnLocation(t *testing.T) {
	b := registered(t)
	if v := b.FromDevice(req(codes.DELETE, "/rd/5a3f").withToken("bye").inspect(t)); v != forward {
		t.Fatalf("verdict = %+v, want forward", v)
	}
	if _, _, ok := b.Registered(); !ok {
		t.Fatal("forgot the registration before the backend confirmed")
	}
	b.FromBackend(resp(codes.Deleted).withToken("bye").inspect(t))
	if loc, lt, ok := b.Registered(); ok || loc != "" || lt != 0 {
		t.Fatalf("after 2.02: Registered() = %q %v %v", loc, lt, ok)
	}
	if v := b.FromDevice(req(codes.POST, "/rd/5a3f").inspect(t)); v != rejectForbiddenL2 {
		t.Errorf("Update after De-register: verdict = %+v, want %+v", v, rejectForbiddenL2)
	}
}

func TestBindingL2DeregisterFailedKeepsRegistration(t *testing.T) {
	b := registered(t)
	b.FromDevice(req(codes.DELETE, "/rd/5a3f").withToken("bye").inspect(t))
	b.FromBackend(resp(codes.InternalServerError).withToken("bye").inspect(t))
	if _, _, ok := b.Registered(); !ok {
		t.Error("a failed De-register dropped the registration")
	}
	// A late 2.02 for a request no longer pending changes nothing.
	b.FromBackend(resp(codes.Deleted).withToken("bye").inspect(t))
	if _, _, ok := b.Registered(); !ok {
		t.Error("an unmatched 2.02 dropped the registration")
	}
}

func TestBindingL2NotFoundForgetsRegistration(t *testing.T) {
	b := registered(t)
	b.FromDevice(req(codes.POST, "/rd/5a3f").withToken("upd").inspect(t))
	b.FromBackend(resp(codes.NotFound).withToken("upd").inspect(t))
	if loc, _, ok := b.Registered(); ok {
		t.Errorf("still registered at %q after 4.04 to the Update", loc)
	}
}

func TestBindingL2LearnsOnlyFromTheMatchingToken(t *testing.T) {
	b := NewBinding("dev1")
	b.FromDevice(req(codes.POST, "/rd", "ep=dev1").withToken("reg").inspect(t))
	b.FromBackend(resp(codes.Created).withToken("xyz").withLocation("/rd/other").inspect(t))
	if loc, _, ok := b.Registered(); ok {
		t.Fatalf("learned %q from another token", loc)
	}
	b.FromBackend(resp(codes.Created).withToken("reg").withLocation("/rd/5a3f").inspect(t))
	if loc, _, _ := b.Registered(); loc != "/rd/5a3f" {
		t.Fatalf("Registered() = %q, want /rd/5a3f", loc)
	}
	// The Register is answered: a second Created with its token is ignored.
	b.FromBackend(resp(codes.Created).withToken("reg").withLocation("/rd/other").inspect(t))
	if loc, _, _ := b.Registered(); loc != "/rd/5a3f" {
		t.Errorf("Registered() = %q after a replayed Created", loc)
	}
}

func TestBindingL2CreatedWithoutRegister(t *testing.T) {
	b := NewBinding("dev1")
	b.FromBackend(resp(codes.Created).withLocation("/rd/5a3f").inspect(t))
	if _, _, ok := b.Registered(); ok {
		t.Error("learned a location without a Register")
	}
}

func TestBindingL2CreatedUnusableLocation(t *testing.T) {
	for _, loc := range []coap{
		resp(codes.Created).withToken("reg"),                          // no Location-Path
		resp(codes.Created).withToken("reg").withLocation("/rd"),      // the registry itself
		resp(codes.Created).withToken("reg").withLocation("/other/1"), // outside /rd
		resp(codes.Created).withToken("reg").withLocationSegments("rd", "a/../b"),
		resp(codes.Created).withToken("reg").withLocationSegments("rd", ".."),
		resp(codes.Created).withToken("reg").withLocationSegments("rd", "a//b"),
		resp(codes.Changed).withToken("reg").withLocation("/rd/5a3f"), // not 2.01
	} {
		b := NewBinding("dev1")
		b.FromDevice(req(codes.POST, "/rd", "ep=dev1").withToken("reg").inspect(t))
		b.FromBackend(loc.inspect(t))
		if got, _, ok := b.Registered(); ok {
			t.Errorf("%v %q: learned %q", loc.code, loc.location, got)
		}
	}
}

func TestBindingL2ReRegisterMovesLocation(t *testing.T) {
	b := registered(t)
	b.FromDevice(req(codes.POST, "/rd", "ep=dev1").withToken("re").inspect(t))
	// Until the backend answers, the old registration stays usable.
	if v := b.FromDevice(req(codes.POST, "/rd/5a3f").inspect(t)); v != forward {
		t.Errorf("old location during re-registration: %+v", v)
	}
	b.FromBackend(resp(codes.Created).withToken("re").withLocation("/rd/77").inspect(t))
	if v := b.FromDevice(req(codes.POST, "/rd/5a3f").inspect(t)); v != rejectForbiddenL2 {
		t.Errorf("old location after re-registration: %+v", v)
	}
	if v := b.FromDevice(req(codes.POST, "/rd/77").inspect(t)); v != forward {
		t.Errorf("new location: %+v", v)
	}
}

func TestBindingL2FailedRegisterKeepsOldLocation(t *testing.T) {
	b := registered(t)
	b.FromDevice(req(codes.POST, "/rd", "ep=dev1").withToken("re").inspect(t))
	b.FromBackend(resp(codes.Forbidden).withToken("re").inspect(t))
	if loc, _, _ := b.Registered(); loc != "/rd/5a3f" {
		t.Errorf("Registered() = %q", loc)
	}
}

func TestBindingLifetime(t *testing.T) {
	b := NewBinding("dev1")
	b.FromDevice(req(codes.POST, "/rd", "ep=dev1").withToken("reg").inspect(t))
	b.FromBackend(resp(codes.Created).withToken("reg").withLocation("/rd/1").inspect(t))
	if _, lt, _ := b.Registered(); lt != DefaultLifetime {
		t.Errorf("Register without lt: lifetime %v, want %v", lt, DefaultLifetime)
	}
	steps := []struct {
		name   string
		update coap
		answer codes.Code
		want   time.Duration
	}{
		{"update with lt", req(codes.POST, "/rd/1", "lt=600"), codes.Changed, 600 * time.Second},
		{"update without lt keeps it", req(codes.POST, "/rd/1", "b=U"), codes.Changed, 600 * time.Second},
		{"failed update keeps it", req(codes.POST, "/rd/1", "lt=5"), codes.BadRequest, 600 * time.Second},
		{"second update", req(codes.POST, "/rd/1", "lt=30"), codes.Changed, 30 * time.Second},
	}
	for i, s := range steps {
		tok := string(rune('a' + i))
		b.FromDevice(s.update.withToken(tok).inspect(t))
		if _, lt, _ := b.Registered(); i == 0 && lt != DefaultLifetime {
			t.Errorf("%s: lifetime changed before the answer: %v", s.name, lt)
		}
		b.FromBackend(resp(s.answer).withToken(tok).inspect(t))
		if _, lt, _ := b.Registered(); lt != s.want {
			t.Errorf("%s: lifetime %v, want %v", s.name, lt, s.want)
		}
	}
}

// TestBindingL4PassesEverythingElse checks that messages outside the
// registration and bootstrap interfaces pass unchanged from the device.
func TestBindingL4PassesEverythingElse(t *testing.T) {
	msgs := []coap{
		resp(codes.Content).withObserve(),
		resp(codes.Content).withObserve().withType(message.NonConfirmable),
		resp(codes.Changed),
		resp(codes.Created).withLocation("/3303/1"), // Create answered by the device
		resp(codes.NotFound),
		{typ: message.Confirmable, mid: 1},     // ping
		{typ: message.Acknowledgement, mid: 1}, // empty ACK
		{typ: message.Reset, mid: 1},           // cancel observation
		req(codes.POST, "/dp", "ep=whatever"),
		req(codes.GET, "/3/0"),
		req(codes.POST, "/rd/x/y").withType(message.NonConfirmable).withPath("3", "0", "4"),
		req(codes.PUT, "/rd", "ep=dev2"),
	}
	for _, b := range []*Binding{NewBinding("dev1"), registered(t)} {
		for _, c := range msgs {
			m := c.inspect(t)
			if v := b.FromDevice(m); v != forward {
				t.Errorf("%v %v: verdict = %+v, want forward", m.Kind, m.Code, v)
			}
		}
	}
	for _, name := range []string{"notify-ack-bc68", "content-non-bc68", "changed-bootstrap-wakaama"} {
		m, err := Inspect(captured(t, name))
		if err != nil {
			t.Fatal(err)
		}
		if v := NewBinding("dev1").FromDevice(m); v != forward {
			t.Errorf("%s: verdict = %+v, want forward", name, v)
		}
	}
}

func TestBindingDropsMalformed(t *testing.T) {
	m, err := Inspect([]byte{0x4f, 0x01, 0x00, 0x01})
	if err == nil {
		t.Fatal("TKL 15 accepted")
	}
	if v := NewBinding("dev1").FromDevice(m); v.Action != Drop || v.Rule != "CoAP" {
		t.Errorf("verdict = %+v, want drop", v)
	}
	if v := NewBinding("dev1").FromDevice(Message{}); v.Action != Drop {
		t.Errorf("zero Message: verdict = %+v, want drop", v)
	}
}

func TestBindingFromBackendIgnoresRequestsAndNotifications(t *testing.T) {
	b := NewBinding("dev1")
	b.FromDevice(req(codes.POST, "/rd", "ep=dev1").withToken("reg").inspect(t))
	// A request from the backend with the same token is no answer.
	b.FromBackend(req(codes.POST, "/rd", "ep=dev1").withToken("reg").inspect(t))
	b.FromBackend(resp(codes.Continue).withToken("reg").inspect(t)) // block-wise: keep waiting
	b.FromBackend(resp(codes.Created).withToken("reg").withLocation("/rd/9").inspect(t))
	if loc, _, _ := b.Registered(); loc != "/rd/9" {
		t.Errorf("Registered() = %q, want /rd/9", loc)
	}
}

// TestBindingCapturedExchanges replays captured exchanges (testdata).
func TestBindingCapturedExchanges(t *testing.T) {
	type step struct {
		fromDevice bool
		file       string
		want       Action
	}
	tests := []struct {
		name     string
		endpoint string
		steps    []step
		location string
		lifetime time.Duration
	}{
		{
			name: "block-wise register", endpoint: "apa",
			steps: []step{
				{true, "register-block1-wakaama", Forward},
				{false, "continue-block1-wakaama", Forward},
				{true, "register-block2-wakaama", Forward},
				{false, "created-block1-wakaama", Forward},
			},
			location: "/rd/0", lifetime: 300 * time.Second,
		},
		{
			name: "block-wise register, wrong endpoint (L1)", endpoint: "bob",
			steps: []step{
				{true, "register-block1-wakaama", Reject},
				{true, "register-block2-wakaama", Reject},
				{false, "created-block1-wakaama", Forward},
			},
		},
		{
			name: "register, deregister", endpoint: "testlwm2mclient",
			steps: []step{
				{true, "register-wakaama", Forward},
				{false, "created-wakaama", Forward},
				{true, "deregister-wakaama", Forward},
			},
			location: "/rd/0", lifetime: 300 * time.Second,
		},
		{
			name: "update of another registration (L2)", endpoint: "testlwm2mclient",
			steps: []step{
				{true, "register-wakaama", Forward},
				{false, "created-wakaama", Forward},
				{true, "update-wakaama-issue102", Reject},
			},
			location: "/rd/0", lifetime: 300 * time.Second,
		},
		{
			name: "bootstrap", endpoint: "apa",
			steps: []step{
				{true, "bootstrap-request-wakaama", Forward},
				{false, "changed-bootstrap-wakaama", Forward},
				{false, "bootstrap-delete-wakaama", Forward},
				{false, "bootstrap-write-wakaama", Forward},
				{false, "bootstrap-finish-wakaama", Forward},
			},
		},
		{
			name: "observe", endpoint: "dev1",
			steps: []step{
				{false, "observe-bc68", Forward},
				{true, "notify-ack-bc68", Forward},
				{true, "content-non-bc68", Forward},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBinding(tt.endpoint)
			for _, s := range tt.steps {
				m, err := Inspect(captured(t, s.file))
				if err != nil {
					t.Fatalf("%s: %v", s.file, err)
				}
				if !s.fromDevice {
					b.FromBackend(m)
					continue
				}
				if v := b.FromDevice(m); v.Action != s.want {
					t.Errorf("%s: %+v, want %v", s.file, v, s.want)
				}
			}
			loc, lt, _ := b.Registered()
			if loc != tt.location || lt != tt.lifetime {
				t.Errorf("Registered() = %q %v, want %q %v", loc, lt, tt.location, tt.lifetime)
			}
		})
	}
}

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{Forward: "forward", Reject: "reject", Drop: "drop", Action(9): "action(?)"} {
		if got := a.String(); got != want {
			t.Errorf("%d: %q, want %q", a, got, want)
		}
	}
}

// TestBindingL2LocationInOneOption: a server that sends "rd/5" as a single
// Location-Path option (lwm2m-node-lib does; RFC 7252 wants one option per
// segment) still teaches the binding its location, and the device's Update
// to /rd/5 is forwarded.
func TestBindingL2LocationInOneOption(t *testing.T) {
	b := NewBinding("dev1")
	b.FromDevice(req(codes.POST, "/rd", "ep=dev1").withToken("reg").inspect(t))
	b.FromBackend(resp(codes.Created).withToken("reg").withLocationSegments("rd/5").inspect(t))
	if got, _, ok := b.Registered(); !ok || got != "/rd/5" {
		t.Fatalf("learned %q, %v", got, ok)
	}
	if v := b.FromDevice(req(codes.POST, "/rd/5").withToken("upd").inspect(t)); v.Action != Forward {
		t.Fatalf("update of /rd/5: %+v", v)
	}
}
