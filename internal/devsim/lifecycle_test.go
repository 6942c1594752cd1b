package devsim

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/protocol/alert"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// lifecycleSite is a backend behind a relay (the gateway's stand-in).
func lifecycleSite(t *testing.T, extra ...dtls.ServerOption) (*Backend, *relay) {
	t.Helper()
	backend := newBackend(t)
	return backend, startRelay(t, backend.Addr(), dtls.PSK{Identity: testIdentity, Key: testKey}, extra...)
}

func deviceConfig(r *relay, ep, version string) DeviceConfig {
	return DeviceConfig{Server: r.addr(), Identity: testIdentity, Key: testKey, Endpoint: ep, Version: version}
}

// TestReboot (issue 9 item 1): a rebooted device forgets its session
// without close_notify and handshakes again from the same address and port,
// then Registers again; for DTLS 1.2 and 1.3.
func TestReboot(t *testing.T) {
	for _, version := range []string{"1.2", "1.3"} {
		t.Run(version, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			backend, r := lifecycleSite(t)
			var events []HandshakeEvent
			cfg := deviceConfig(r, "reboot-"+version, version)
			cfg.OnHandshake = func(ev HandshakeEvent) { events = append(events, ev) }
			d := dial(t, ctx, cfg)
			first, err := d.Register(ctx)
			if err != nil {
				t.Fatal(err)
			}
			addr := d.LocalAddr().String()

			if err := d.Reboot(ctx); err != nil {
				t.Fatalf("Reboot: %v", err)
			}
			if got := d.LocalAddr().String(); got != addr {
				t.Errorf("local address %s after reboot, want %s", got, addr)
			}
			if from := r.handshakesFrom(); !slices.Equal(from, []string{addr, addr}) {
				t.Errorf("handshakes from %v, want two from %s", from, addr)
			}
			// The relay replaces a live session only: had the device sent
			// close_notify, its old session would have ended before.
			if n := r.replacedSessions(); n != 1 {
				t.Errorf("relay replaced %d live sessions, want 1 (no close_notify before the new ClientHello)", n)
			}
			second := d.Location()
			if second == "" || second == first {
				t.Errorf("location after reboot %q, first %q: want a new registration", second, first)
			}
			reg, err := backend.WaitRegistration(ctx, cfg.Endpoint)
			if err != nil || reg.Location != second {
				t.Fatalf("backend registration %+v, %v", reg, err)
			}
			if err := d.Update(ctx); err != nil {
				t.Errorf("Update after reboot: %v", err)
			}
			if d.CipherSuiteID() == 0 {
				t.Error("no session state after reboot")
			}
			st := d.Stats()
			if st.Handshakes != 2 || st.Reboots != 1 || st.SessionsLost != 0 {
				t.Errorf("stats %+v", st)
			}
			if len(events) != 2 || events[0].Reason != HandshakeDial || events[1].Reason != HandshakeReboot || events[1].Err != nil {
				t.Errorf("handshake events %+v", events)
			}
		})
	}
}

// TestRehandshakeIdle (issue 9 items 1 and 2): after an idle time longer
// than RehandshakeIdle, the device runs a new handshake from the same port
// before its Update, and the Update goes to the registration it has.
func TestRehandshakeIdle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	backend, r := lifecycleSite(t)
	cfg := deviceConfig(r, "idle", "1.3")
	cfg.RehandshakeIdle = time.Second
	d := dial(t, ctx, cfg)
	loc, err := d.Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sleep(ctx, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := d.Update(ctx); err != nil {
		t.Fatalf("Update after idle: %v", err)
	}
	if st := d.Stats(); st.IdleRehandshakes < 1 || st.Sleeps != 1 {
		t.Errorf("stats %+v, want an idle re-handshake", st)
	}
	addr := d.LocalAddr().String()
	if from := r.handshakesFrom(); len(from) < 2 || slices.ContainsFunc(from, func(a string) bool { return a != addr }) {
		t.Errorf("handshakes from %v, want all from %s", from, addr)
	}
	reg, _ := backend.Registration(cfg.Endpoint)
	if reg.Location != loc || d.Location() != loc || reg.Updates != 1 {
		t.Errorf("registration %+v, device location %q: want the Update on %s", reg, d.Location(), loc)
	}
	if n := len(backend.Registrations()); n != 1 {
		t.Errorf("%d registrations, want 1", n)
	}
}

// TestAutoReconnectAfterRestart (issue 9 item 2): the gateway forgets every
// session (a restart); the device's Update goes unanswered, so it
// handshakes again from the same port and Updates its registration; when
// the server no longer knows the registration (4.04) it Registers again.
func TestAutoReconnectAfterRestart(t *testing.T) {
	for _, tt := range []struct {
		name    string
		forget  bool // the backend forgets the registration too
		newLoc  bool
		version string
	}{
		{"update kept 1.3", false, false, "1.3"},
		{"update kept 1.2", false, false, "1.2"},
		{"update 4.04 then register", true, true, "1.3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			backend, r := lifecycleSite(t)
			cfg := deviceConfig(r, "restart", tt.version)
			cfg.AutoReconnect = true
			cfg.ACKTimeout, cfg.MaxRetransmit = time.Second, -1
			d := dial(t, ctx, cfg)
			loc, err := d.Register(ctx)
			if err != nil {
				t.Fatal(err)
			}
			r.forget()
			if tt.forget {
				backend.Forget(cfg.Endpoint)
			}
			if err := d.Update(ctx); err != nil {
				t.Fatalf("Update after restart: %v", err)
			}
			st := d.Stats()
			if st.Reconnects != 1 || st.Handshakes != 2 {
				t.Errorf("stats %+v, want one reconnection", st)
			}
			reg, err := backend.WaitRegistration(ctx, cfg.Endpoint)
			if err != nil {
				t.Fatal(err)
			}
			if tt.newLoc {
				if reg.Location == loc || d.Location() != reg.Location {
					t.Errorf("registration %q, device %q, old %q: want a new Register", reg.Location, d.Location(), loc)
				}
			} else if reg.Location != loc || reg.Updates != 1 {
				t.Errorf("registration %+v: want the Update on %s", reg, loc)
			}
			if err := d.Send(ctx, []byte("[]")); err != nil {
				t.Errorf("Send on the new session: %v", err)
			}
		})
	}
}

// TestReconnectForbidden: Reconnect reports an Update answered 4.03 (what
// the gateway answered before issue 9) as a *CodeError and does not
// register again.
func TestReconnectForbidden(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	forbid := newForbiddingServer(t)
	r := startRelay(t, forbid.LocalAddr(), dtls.PSK{Identity: testIdentity, Key: testKey})
	d := dial(t, ctx, deviceConfig(r, "forbidden", "1.3"))
	if _, err := d.Register(ctx); err != nil {
		t.Fatal(err)
	}
	err := d.Reconnect(ctx)
	var ce *CodeError
	if !errors.As(err, &ce) || ce.Code != codes.Forbidden || ce.Op != "update" {
		t.Fatalf("Reconnect = %v, want a 4.03 *CodeError for the update", err)
	}
	if d.Location() != "/rd/1" {
		t.Errorf("location %q: the device registered again", d.Location())
	}
}

// newForbiddingServer answers Register with 2.01 /rd/1 and anything else
// with 4.03, as the gateway did to an Update on a new session (rule L2).
func newForbiddingServer(t *testing.T) net.PacketConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ex := newExchanger(0, 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := decode(buf[:n])
			if err != nil {
				continue
			}
			reply := func(b []byte) error { _, err := pc.WriteTo(b, from); return err }
			ex.receive(from.String(), m, reply, func(req message.Message) (message.Message, bool) {
				if joinPath(req.Options, message.URIPath) == "/rd" {
					resp := message.Message{Code: codes.Created}
					resp.Options = withPath(resp.Options, message.LocationPath, "/rd/1")
					return resp, true
				}
				return message.Message{Code: codes.Forbidden}, true
			}, nil)
		}
	}()
	t.Cleanup(func() { _ = pc.Close(); <-done })
	return pc
}

// TestRefusedAfterHandshake (issue 13): a gateway that refuses a session
// after the handshake (an alert after its Finished) makes the device's
// first request fail with ErrRefused and the alert, not a timeout; in DTLS
// 1.2 the refusal comes before the server's Finished and fails Dial.
func TestRefusedAfterHandshake(t *testing.T) {
	refuse := dtls.WithVerifyConnection(func(*dtls.State) error { return errors.New("policy") })
	for _, version := range []string{"1.3", "1.2"} {
		t.Run(version, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			backend, r := lifecycleSite(t, refuse)
			cfg := deviceConfig(r, "refused", version)
			cfg.Logger = testLogger(t)
			d, err := Dial(ctx, cfg)
			if err == nil {
				t.Cleanup(func() { _ = d.Close() })
				_, err = d.Register(ctx)
				if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrSessionLost) {
					t.Fatalf("Register = %v, want ErrRefused", err)
				}
				if st := d.Stats(); st.Refused != 1 || st.SessionsLost != 1 {
					t.Errorf("stats %+v", st)
				}
			} else if version == "1.3" {
				t.Logf("the alert arrived during the handshake: %v", err)
			}
			a, ok := AlertOf(err)
			if !ok || a.Description != alert.BadCertificate {
				t.Errorf("alert of %v = %v, %v; want bad_certificate", err, a, ok)
			}
			if n := len(backend.Received()); n != 0 {
				t.Errorf("backend received %d requests", n)
			}
		})
	}
}

// TestSleepRadioOff: a sleeping device answers nothing; the backend's
// CoAP retransmission reaches it once it wakes up.
func TestSleepRadioOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	backend, r := lifecycleSite(t)
	d := dial(t, ctx, deviceConfig(r, "sleepy", "1.3"))
	if _, err := d.Register(ctx); err != nil {
		t.Fatal(err)
	}
	slept := make(chan error, 1)
	go func() { slept <- d.Sleep(ctx, 1500*time.Millisecond) }()
	read := make(chan error, 1)
	// The Read starts once the radio is off: wait for the sleep to begin.
	waitFor(t, ctx, func() bool { return d.port.sleeping() })
	go func() { _, err := backend.Read(ctx, "sleepy", "/3/0/0"); read <- err }()
	if err := <-slept; err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatalf("Read across the sleep: %v", err)
	}
	if st := d.Stats(); st.LostWhileAsleep < 1 || st.Sleeps != 1 {
		t.Errorf("stats %+v: want the first GET lost while asleep", st)
	}
	if d.Served() != 1 {
		t.Errorf("served %d", d.Served())
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("condition not reached")
		}
	}
}

// TestLifecycleAfterClose: lifecycle calls on a closed device fail with
// ErrClosed and open nothing.
func TestLifecycleAfterClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, r := lifecycleSite(t)
	d := dial(t, ctx, deviceConfig(r, "closed", "1.3"))
	waitFor(t, ctx, func() bool { return len(r.handshakesFrom()) == 1 })
	_ = d.Close()
	for name, f := range map[string]func() error{
		"Reboot":      func() error { return d.Reboot(ctx) },
		"Rehandshake": func() error { return d.Rehandshake(ctx) },
		"Reconnect":   func() error { return d.Reconnect(ctx) },
		"Sleep":       func() error { return d.Sleep(ctx, time.Second) },
	} {
		if err := f(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if n := len(r.handshakesFrom()); n != 1 {
		t.Errorf("%d handshakes, want 1", n)
	}
}
