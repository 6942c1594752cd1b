package devsim

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// rawPeer is a plain UDP CoAP endpoint under the test's control.
type rawPeer struct {
	t    *testing.T
	conn *net.UDPConn
}

func newRawPeer(t *testing.T, backend *Backend) *rawPeer {
	t.Helper()
	conn, err := net.DialUDP("udp", nil, backend.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawPeer{t: t, conn: conn}
}

func request(typ message.Type, code codes.Code, mid int32, token string, path string, q ...string) message.Message {
	m := message.Message{Type: typ, Code: code, MessageID: mid, Token: message.Token(token)}
	m.Options = withPath(m.Options, message.URIPath, path)
	for _, s := range q {
		m.Options = m.Options.Add(message.Option{ID: message.URIQuery, Value: []byte(s)})
	}
	return m
}

func (p *rawPeer) send(m message.Message) {
	p.t.Helper()
	raw, err := encode(m)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.conn.Write(raw); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next datagram, raw and decoded.
func (p *rawPeer) recv() ([]byte, message.Message) {
	p.t.Helper()
	buf := make([]byte, 2048)
	_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := p.conn.Read(buf)
	if err != nil {
		p.t.Fatalf("recv: %v", err)
	}
	m, err := decode(buf[:n])
	if err != nil {
		p.t.Fatalf("decode: %v", err)
	}
	return buf[:n], m
}

func (p *rawPeer) roundTrip(m message.Message) message.Message {
	p.t.Helper()
	p.send(m)
	_, resp := p.recv()
	return resp
}

// TestBackendRetransmittedCON: a CON retransmitted with the same Message ID
// from the same source is answered with identical bytes and processed once
// (RFC 7252 §4.5); the same Message ID from another source is a new message.
func TestBackendRetransmittedCON(t *testing.T) {
	backend := newBackend(t)
	peer := newRawPeer(t, backend)
	reg := request(message.Confirmable, codes.POST, 0x1234, "tok1", "/rd", "ep=dup", "lt=60")
	peer.send(reg)
	first, resp := peer.recv()
	peer.send(reg)
	second, _ := peer.recv()
	if resp.Type != message.Acknowledgement || resp.Code != codes.Created || resp.MessageID != 0x1234 || string(resp.Token) != "tok1" {
		t.Fatalf("response = %v", resp.String())
	}
	if !bytes.Equal(first, second) {
		t.Errorf("retransmission answered differently:\n%x\n%x", first, second)
	}
	if n := len(backend.Registrations()); n != 1 {
		t.Errorf("%d registrations, want 1", n)
	}
	if n := len(backend.Received()); n != 1 {
		t.Errorf("%d requests recorded, want 1", n)
	}

	other := newRawPeer(t, backend)
	resp = other.roundTrip(request(message.Confirmable, codes.POST, 0x1234, "tok1", "/rd", "ep=other"))
	if resp.Code != codes.Created {
		t.Errorf("same MID from another source: %v", resp.String())
	}
	if n := len(backend.Registrations()); n != 2 {
		t.Errorf("%d registrations, want 2", n)
	}
}

func TestBackendRequests(t *testing.T) {
	backend := newBackend(t)
	events := make(chan Event, 16)
	backend.OnEvent(func(ev Event) { events <- ev })
	peer := newRawPeer(t, backend)
	resp := peer.roundTrip(request(message.Confirmable, codes.POST, 1, "r", "/rd", "ep=dev", "lt=120", "b=UQ", "lwm2m=1.2"))
	if resp.Code != codes.Created {
		t.Fatalf("register: %v", resp.String())
	}
	loc := joinPath(resp.Options, message.LocationPath)
	reg, ok := backend.Registration("dev")
	if !ok || reg.Location != loc || reg.Lifetime != 120*time.Second || reg.Binding != "UQ" || reg.Version != "1.2" {
		t.Errorf("registration = %+v, location %q", reg, loc)
	}

	tests := []struct {
		name string
		req  message.Message
		want codes.Code
	}{
		{"update unknown location", request(message.Confirmable, codes.POST, 10, "a", "/rd/nope"), codes.NotFound},
		{"deregister unknown location", request(message.Confirmable, codes.DELETE, 11, "b", "/rd/nope"), codes.NotFound},
		{"unknown path", request(message.Confirmable, codes.GET, 12, "c", "/foo"), codes.NotFound},
		{"register without ep", request(message.Confirmable, codes.POST, 13, "d", "/rd", "lt=60"), codes.BadRequest},
		{"register bad lt", request(message.Confirmable, codes.POST, 14, "e", "/rd", "ep=x", "lt=soon"), codes.BadRequest},
		{"get /rd", request(message.Confirmable, codes.GET, 15, "f", "/rd"), codes.MethodNotAllowed},
		{"bootstrap request", request(message.Confirmable, codes.POST, 16, "g", "/bs", "ep=dev"), codes.Changed},
		{"send", request(message.Confirmable, codes.POST, 17, "h", "/dp"), codes.Changed},
		{"update", request(message.Confirmable, codes.POST, 18, "i", loc, "lt=300"), codes.Changed},
		{"update non-confirmable", request(message.NonConfirmable, codes.POST, 19, "j", loc), codes.Changed},
		{"deregister", request(message.Confirmable, codes.DELETE, 20, "k", loc), codes.Deleted},
		{"deregister again", request(message.Confirmable, codes.DELETE, 21, "l", loc), codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := peer.roundTrip(tt.req)
			if resp.Code != tt.want || string(resp.Token) != string(tt.req.Token) {
				t.Errorf("got %v, want %v", resp.String(), codeString(tt.want))
			}
			wantType := message.Acknowledgement
			if tt.req.Type == message.NonConfirmable {
				wantType = message.NonConfirmable
			}
			if resp.Type != wantType {
				t.Errorf("type %v, want %v", resp.Type, wantType)
			}
		})
	}

	var kinds []EventKind
	for len(events) > 0 {
		ev := <-events
		kinds = append(kinds, ev.Kind)
		if ev.Endpoint != "dev" {
			t.Errorf("event %v endpoint %q", ev.Kind, ev.Endpoint)
		}
	}
	want := []EventKind{EventRegistered, EventBootstrapRequested, EventSent, EventUpdated, EventUpdated, EventDeregistered}
	if len(kinds) != len(want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Errorf("events %v, want %v", kinds, want)
			break
		}
	}
}

func TestBackendPing(t *testing.T) {
	backend := newBackend(t)
	peer := newRawPeer(t, backend)
	resp := peer.roundTrip(message.Message{Type: message.Confirmable, Code: codes.Empty, MessageID: 7})
	if resp.Type != message.Reset || resp.MessageID != 7 {
		t.Errorf("ping answered %v, want RST", resp.String())
	}
}

// TestBackendObserve drives an observation from a raw device: stale
// notifications (RFC 7641 §3.4) are dropped, duplicates acknowledged once
// more but delivered once, an unknown token is reset, and a final response
// without Observe ends the observation.
func TestBackendObserve(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	backend := newBackend(t)
	peer := newRawPeer(t, backend)
	if resp := peer.roundTrip(request(message.Confirmable, codes.POST, 1, "r", "/rd", "ep=obs")); resp.Code != codes.Created {
		t.Fatal(resp.String())
	}

	type observed struct {
		ch  <-chan []byte
		err error
	}
	done := make(chan observed, 1)
	go func() {
		ch, err := backend.Observe(ctx, "obs", "/3303/0/5700")
		done <- observed{ch, err}
	}()
	_, get := peer.recv()
	if obs, ok := observeValue(get); get.Code != codes.GET || !ok || obs != 0 || joinPath(get.Options, message.URIPath) != "/3303/0/5700" {
		t.Fatalf("observe request = %v", get.String())
	}
	ack := message.Message{Type: message.Acknowledgement, Code: codes.Content, MessageID: get.MessageID, Token: get.Token, Payload: []byte("20.0")}
	ack.Options = withUint(ack.Options, message.Observe, 5)
	peer.send(ack)
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}

	notify := func(mid int32, seq uint32, token message.Token, payload string) message.Message {
		m := message.Message{Type: message.Confirmable, Code: codes.Content, MessageID: mid, Token: token, Payload: []byte(payload)}
		if seq > 0 {
			m.Options = withUint(m.Options, message.Observe, seq)
		}
		return m
	}
	for _, n := range []struct {
		mid     int32
		seq     uint32
		payload string
		want    message.Type
	}{
		{100, 7, "21.0", message.Acknowledgement},
		{101, 6, "stale", message.Acknowledgement},
		{100, 7, "21.0", message.Acknowledgement}, // duplicate
		{102, 8, "22.0", message.Acknowledgement},
	} {
		resp := peer.roundTrip(notify(n.mid, n.seq, get.Token, n.payload))
		if resp.Type != n.want || resp.MessageID != n.mid {
			t.Errorf("notify %d answered %v", n.mid, resp.String())
		}
	}
	if resp := peer.roundTrip(notify(103, 9, message.Token("unknown"), "x")); resp.Type != message.Reset {
		t.Errorf("unknown token answered %v, want RST", resp.String())
	}
	peer.roundTrip(notify(104, 0, get.Token, "final"))

	var got []string
	for p := range res.ch {
		got = append(got, string(p))
	}
	if want := []string{"21.0", "22.0", "final"}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("notifications %q, want %q", got, want)
	}
}

func TestBackendReadErrors(t *testing.T) {
	backend := newBackend(t)
	if _, err := backend.Read(context.Background(), "nobody", "/3/0/0"); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("Read unregistered: %v", err)
	}
	peer := newRawPeer(t, backend)
	peer.roundTrip(request(message.Confirmable, codes.POST, 1, "r", "/rd", "ep=mute"))
	// The device receives the GET and stays silent; the caller gives up
	// (cancels) once the GET has arrived.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	read := make(chan error, 1)
	go func() { _, err := backend.Read(ctx, "mute", "/3/0/0"); read <- err }()
	if _, get := peer.recv(); get.Code != codes.GET {
		t.Fatalf("device received %v, want the GET", get.String())
	}
	cancel()
	if err := <-read; !errors.Is(err, context.Canceled) {
		t.Errorf("Read from a silent device: %v", err)
	}
	_ = backend.Close()
	if _, err := backend.WaitRegistration(context.Background(), "later"); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitRegistration after Close: %v", err)
	}
	if _, err := backend.Observe(context.Background(), "mute", "/3/0/0"); err == nil {
		t.Error("Observe after Close succeeded")
	}
}

// TestExchangeRetransmit checks the client side of RFC 7252 §4.2: an
// unanswered CON is retransmitted with back-off, then ErrTimeout.
func TestExchangeRetransmit(t *testing.T) {
	ex := newExchanger(10*time.Millisecond, 3)
	sent := make(chan []byte, 16)
	_, err := ex.roundTrip(context.Background(), "p", func(b []byte) error { sent <- b; return nil },
		message.Message{Code: codes.GET, MessageID: -1})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if n := len(sent); n != 4 {
		t.Errorf("sent %d times, want 1 + 3 retransmissions", n)
	}
	first := <-sent
	for len(sent) > 0 {
		if again := <-sent; !bytes.Equal(again, first) {
			t.Errorf("retransmission differs: %x vs %x", again, first)
		}
	}
}

// TestExchangeSeparateResponse: an Empty ACK stops retransmission and the
// response arriving later as a CON is matched by token and acknowledged
// (RFC 7252 §5.2.2); its retransmission is acknowledged again, not
// delivered twice. Time is the test's: the retransmission timer fires only
// when the test fires it, so "no retransmission after the ACK" is checked
// by firing it, not by sleeping.
func TestExchangeSeparateResponse(t *testing.T) {
	ex := newExchanger(20*time.Millisecond, 2)
	clock := newFakeTimers()
	ex.newTimer = clock.newTimer
	sent := make(chan message.Message, 16)
	send := func(b []byte) error {
		m, err := decode(b)
		if err == nil {
			sent <- m
		}
		return err
	}
	type out struct {
		m   message.Message
		err error
	}
	done := make(chan out, 1)
	go func() {
		m, err := ex.roundTrip(context.Background(), "p", send, message.Message{Code: codes.GET, MessageID: -1})
		done <- out{m, err}
	}()
	req := <-sent
	timer := <-clock.created
	ex.receive("p", message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: req.MessageID}, send, nil, nil)
	select {
	case <-timer.stopped: // the exchange saw the ACK and disarmed its timer
	case <-time.After(10 * time.Second):
		t.Fatal("retransmission timer still armed after the Empty ACK")
	}
	timer.fire() // a timer that fired anyway must not retransmit
	resp := message.Message{Type: message.Confirmable, Code: codes.Content, MessageID: 999, Token: req.Token, Payload: []byte("v")}
	for range 2 {
		ex.receive("p", resp, send, nil, nil)
		if ack := <-sent; ack.Type != message.Acknowledgement || ack.MessageID != 999 || ack.Code != codes.Empty {
			t.Errorf("separate response answered %v", ack.String())
		}
	}
	r := <-done
	if r.err != nil || string(r.m.Payload) != "v" {
		t.Errorf("roundTrip = %v, %v", r.m.String(), r.err)
	}
	// roundTrip has returned: whatever it sent is in sent.
	for len(sent) > 0 {
		if m := <-sent; m.MessageID == req.MessageID {
			t.Error("retransmitted after the Empty ACK")
		}
	}
}

// fakeTimers makes retransmission timers that fire only when a test says.
type fakeTimers struct{ created chan *fakeTimer }

func newFakeTimers() *fakeTimers { return &fakeTimers{created: make(chan *fakeTimer, 16)} }

func (f *fakeTimers) newTimer(time.Duration) retransmitTimer {
	t := &fakeTimer{c: make(chan time.Time, 1), stopped: make(chan struct{})}
	f.created <- t
	return t
}

type fakeTimer struct {
	c       chan time.Time
	stopped chan struct{}
	once    sync.Once
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.once.Do(func() { close(t.stopped) })
	return true
}

func (t *fakeTimer) Reset(time.Duration) bool { return true }

func (t *fakeTimer) fire() {
	select {
	case t.c <- time.Now():
	default:
	}
}

// TestExchangeDuplicateRequest: a duplicated request is served once and the
// duplicate gets the cached answer (the Device's side of RFC 7252 §4.5).
func TestExchangeDuplicateRequest(t *testing.T) {
	ex := newExchanger(0, 0)
	served := 0
	serve := func(req message.Message) (message.Message, bool) {
		served++
		return message.Message{Code: codes.Content, Payload: []byte{byte(served)}}, true
	}
	var replies [][]byte
	reply := func(b []byte) error { replies = append(replies, b); return nil }
	req := request(message.Confirmable, codes.GET, 42, "t", "/3/0/0")
	ex.receive("", req, reply, serve, nil)
	ex.receive("", req, reply, serve, nil)
	non := request(message.NonConfirmable, codes.GET, 43, "u", "/3/0/0")
	ex.receive("", non, reply, serve, nil)
	ex.receive("", non, reply, serve, nil)
	if served != 2 {
		t.Errorf("served %d, want 2", served)
	}
	if len(replies) != 3 || !bytes.Equal(replies[0], replies[1]) {
		t.Fatalf("replies %x", replies)
	}
	if m, _ := decode(replies[2]); m.Type != message.NonConfirmable || string(m.Token) != "u" {
		t.Errorf("NON request answered %v", m.String())
	}
}
