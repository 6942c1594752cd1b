package devsim

import (
	"context"
	"crypto"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"github.com/pion/dtls/v4/pkg/protocol"
	"github.com/pion/dtls/v4/pkg/protocol/alert"
	extension13 "github.com/pion/dtls/v4/pkg/protocol/extension/dtls13"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

var (
	testIdentity = []byte("urn:imei:490154203237518")
	testKey      = []byte("0123456789abcdef0123456789abcdef")
)

func newBackend(t *testing.T) *Backend {
	t.Helper()
	b, err := NewBackend("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func dial(t *testing.T, ctx context.Context, cfg DeviceConfig) *Device {
	t.Helper()
	cfg.Logger = testLogger(t)
	d, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// TestDeviceLifecycle runs the LwM2M flows of a device through a DTLS relay
// to the backend, for each DTLS version and key-exchange mode.
func TestDeviceLifecycle(t *testing.T) {
	tests := []struct {
		name     string
		cfg      DeviceConfig
		version  protocol.Version
		suite    ciphersuite.ID
		modes    []extension13.PSKKeyExchangeMode // offered; nil for 1.2
		keyShare bool                             // ServerHello has key_share
		cid      bool
		wantSNI  string
	}{
		{
			name:    "dtls13 psk_dhe_ke",
			cfg:     DeviceConfig{ServerName: "lwm2m.example.com"},
			version: protocol.Version1_3, suite: ciphersuite.TLS_AES_128_GCM_SHA256,
			modes: []extension13.PSKKeyExchangeMode{extension13.PSKDHEKE}, keyShare: true, cid: true,
			wantSNI: "lwm2m.example.com",
		},
		{
			name:    "dtls13 psk_ke only",
			cfg:     DeviceConfig{Mode: ModePSK},
			version: protocol.Version1_3, suite: ciphersuite.TLS_AES_128_GCM_SHA256,
			modes: []extension13.PSKKeyExchangeMode{extension13.PSKKE}, keyShare: false, cid: true,
		},
		{
			name:    "dtls13 both modes",
			cfg:     DeviceConfig{Mode: "psk_dhe_ke,psk_ke"},
			version: protocol.Version1_3, suite: ciphersuite.TLS_AES_128_GCM_SHA256,
			modes: []extension13.PSKKeyExchangeMode{extension13.PSKDHEKE, extension13.PSKKE}, keyShare: true, cid: true,
		},
		{
			name:    "dtls13 sha384 no cid",
			cfg:     DeviceConfig{Hash: crypto.SHA384, NoConnectionID: true},
			version: protocol.Version1_3, suite: ciphersuite.TLS_AES_256_GCM_SHA384,
			modes: []extension13.PSKKeyExchangeMode{extension13.PSKDHEKE}, keyShare: true, cid: false,
		},
		{
			name:    "dtls12 psk ccm8",
			cfg:     DeviceConfig{Version: "1.2"},
			version: protocol.Version1_2, suite: ciphersuite.TLS_PSK_WITH_AES_128_CCM_8,
			cid: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			backend := newBackend(t)
			var events []EventKind
			eventsC := make(chan EventKind, 16)
			backend.OnEvent(func(ev Event) { eventsC <- ev.Kind })
			relay := startRelay(t, backend.Addr(), dtls.PSK{Identity: testIdentity, Key: testKey, Hash: tt.cfg.Hash})

			cfg := tt.cfg
			cfg.Server, cfg.Identity, cfg.Key, cfg.Endpoint = relay.addr(), testIdentity, testKey, "dev-"+strings.ReplaceAll(tt.name, " ", "-")
			d := dial(t, ctx, cfg)
			if got := d.NegotiatedVersion(); got != tt.version {
				t.Errorf("version = %#x, want %#x", got, tt.version)
			}
			if got := d.CipherSuiteID(); got != tt.suite {
				t.Errorf("suite = %v, want %v", got, tt.suite)
			}

			loc, err := d.Register(ctx)
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			if !strings.HasPrefix(loc, "/rd/") {
				t.Errorf("location = %q, want /rd/...", loc)
			}
			reg, err := backend.WaitRegistration(ctx, cfg.Endpoint)
			if err != nil {
				t.Fatal(err)
			}
			if reg.Location != loc || reg.Lifetime != time.Hour || reg.Binding != "U" || reg.Version != "1.1" || reg.Links != "</1/0>,</3/0>" {
				t.Errorf("registration = %+v", reg)
			}
			if err := d.Update(ctx); err != nil {
				t.Fatalf("Update: %v", err)
			}
			if reg, _ := backend.Registration(cfg.Endpoint); reg.Updates != 1 {
				t.Errorf("updates = %d, want 1", reg.Updates)
			}

			got, err := backend.Read(ctx, cfg.Endpoint, "/3/0/0")
			if err != nil || string(got) != "ACME Corp" {
				t.Errorf("Read /3/0/0 = %q, %v", got, err)
			}
			_, err = backend.Read(ctx, cfg.Endpoint, "/5/0/1")
			var codeErr *CodeError
			if !errors.As(err, &codeErr) || codeErr.Code != codes.NotFound {
				t.Errorf("Read unknown path: err = %v, want 4.04", err)
			}

			if err := d.Notify(ctx, []byte("x")); !errors.Is(err, ErrNoObservation) {
				t.Errorf("Notify before Observe: %v, want ErrNoObservation", err)
			}
			notes, err := backend.Observe(ctx, cfg.Endpoint, "/3/0/9")
			if err != nil {
				t.Fatalf("Observe: %v", err)
			}
			for _, level := range []string{"99", "98", "97"} {
				if err := d.Notify(ctx, []byte(level)); err != nil {
					t.Fatalf("Notify: %v", err)
				}
				select {
				case p := <-notes:
					if string(p) != level {
						t.Errorf("notification = %q, want %q", p, level)
					}
				case <-ctx.Done():
					t.Fatal("no notification")
				}
			}
			if got, _ := backend.Read(ctx, cfg.Endpoint, "/3/0/9"); string(got) != "97" {
				t.Errorf("Read after Notify = %q, want 97", got)
			}

			if err := d.Send(ctx, []byte(`[{"n":"/3/0/9","v":97}]`)); err != nil {
				t.Errorf("Send: %v", err)
			}
			req := pool.NewMessage(ctx)
			req.SetCode(codes.POST)
			req.MustSetPath("/rd/unknown")
			resp, err := d.Do(ctx, req)
			if err != nil || resp.Code() != codes.NotFound {
				t.Errorf("Do POST /rd/unknown = %v, %v; want 4.04", resp, err)
			}
			if err := d.Deregister(ctx); err != nil {
				t.Fatalf("Deregister: %v", err)
			}
			if regs := backend.Registrations(); len(regs) != 0 {
				t.Errorf("registrations after Deregister = %+v", regs)
			}
			if n := d.Served(); n != 4 { // Read, Read 4.04, Observe, Read
				t.Errorf("Served = %d, want 4", n)
			}

			var paths []string
			for _, r := range backend.Received() {
				paths = append(paths, r.Code.String()+" "+r.Path)
				if r.From.String() != reg.Addr.String() {
					t.Errorf("request from %v, want the session's upstream address %v", r.From, reg.Addr)
				}
			}
			wantPaths := []string{"POST /rd", "POST " + loc, "POST /dp", "POST /rd/unknown", "DELETE " + loc}
			if !slices.Equal(paths, wantPaths) {
				t.Errorf("received %q, want %q", paths, wantPaths)
			}
			for len(events) < 4 {
				select {
				case k := <-eventsC:
					events = append(events, k)
				case <-ctx.Done():
					t.Fatalf("events = %v", events)
				}
			}
			if want := []EventKind{EventRegistered, EventUpdated, EventSent, EventDeregistered}; !slices.Equal(events, want) {
				t.Errorf("events = %v, want %v", events, want)
			}

			if err := d.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := d.Update(ctx); err == nil {
				t.Error("Update after Close succeeded")
			}

			states, errs := relay.sessions()
			if len(errs) != 0 || len(states) != 1 {
				t.Fatalf("server sessions = %d, handshake errors %v", len(states), errs)
			}
			if st := states[0]; st.NegotiatedVersion() != tt.version || st.CipherSuiteID != tt.suite || st.ServerName != tt.wantSNI {
				t.Errorf("server state: version %#x suite %v sni %q", st.NegotiatedVersion(), st.CipherSuiteID, st.ServerName)
			}
			in, out := relay.tap.datagrams()
			if tt.modes != nil {
				for _, modes := range offeredModes(t, in) {
					if !slices.Equal(modes, tt.modes) {
						t.Errorf("ClientHello offers modes %v, want %v", modes, tt.modes)
					}
				}
				if got := serverHelloKeyShare(t, out); got != tt.keyShare {
					t.Errorf("ServerHello key_share = %v, want %v", got, tt.keyShare)
				}
				if n := groupRetries(t, out); n != 0 {
					t.Errorf("%d HelloRetryRequests for a group, want none with the X25519-only default", n)
				}
			}
			if got := sentCID(in); got != tt.cid {
				t.Errorf("device sent CID = %v, want %v", got, tt.cid)
			}
		})
	}
}

// TestModePSKKEClientHello checks on the wire that Mode "psk_ke" offers only
// psk_ke (R3: the gateway must be able to see and refuse it), that the PSK
// binder computed after the hook still verifies (the server accepts the
// handshake), and that the server then runs psk_ke (no key_share).
func TestModePSKKEClientHello(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	backend := newBackend(t)
	relay := startRelay(t, backend.Addr(), dtls.PSK{Identity: testIdentity, Key: testKey})
	d := dial(t, ctx, DeviceConfig{Server: relay.addr(), Identity: testIdentity, Key: testKey, Endpoint: "ke", Mode: ModePSK})
	if _, err := d.Register(ctx); err != nil {
		t.Fatal(err)
	}
	in, out := relay.tap.datagrams()
	hellos := offeredModes(t, in)
	if len(hellos) == 0 {
		t.Fatal("no ClientHello captured")
	}
	for i, modes := range hellos {
		if !slices.Equal(modes, []extension13.PSKKeyExchangeMode{extension13.PSKKE}) {
			t.Errorf("ClientHello %d offers %v, want only psk_ke", i, modes)
		}
	}
	if serverHelloKeyShare(t, out) {
		t.Error("ServerHello carries key_share: server did not run psk_ke")
	}
}

// TestDialWrongKey checks that a wrong key ends Dial with an error, not a
// hang: DTLS 1.3 fails with the server's decrypt_error alert (its binder
// check); DTLS 1.2 fails at HandshakeTimeout without an alert, because the
// server silently drops the client Finished it cannot decrypt (RFC 6347
// §4.1.2.7).
func TestDialWrongKey(t *testing.T) {
	tests := []struct {
		version string
		alert   bool
	}{
		{"1.3", true},
		{"1.2", false},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			backend := newBackend(t)
			relay := startRelay(t, backend.Addr(), dtls.PSK{Identity: testIdentity, Key: testKey})
			start := time.Now()
			d, err := Dial(context.Background(), DeviceConfig{
				Server: relay.addr(), Identity: testIdentity, Key: []byte("fedcba9876543210fedcba9876543210"),
				Endpoint: "wrong", Version: tt.version, HandshakeTimeout: 3 * time.Second,
			})
			if err == nil {
				_ = d.Close()
				t.Fatal("handshake with a wrong key succeeded")
			}
			t.Logf("DTLS %s wrong key: %v after %v", tt.version, err, time.Since(start).Round(time.Millisecond))
			a, ok := AlertOf(err)
			switch {
			case tt.alert && (!ok || a.Description != alert.DecryptError):
				t.Errorf("alert %v, %v; want decrypt_error", a, ok)
			case !tt.alert && ok:
				t.Errorf("alert %v, want none", a)
			case !tt.alert && !errors.Is(err, context.DeadlineExceeded):
				t.Errorf("err = %v, want the handshake timeout", err)
			}
			if regs := backend.Registrations(); len(regs) != 0 {
				t.Errorf("registrations = %+v", regs)
			}
		})
	}
}

// TestPionDefaultGroupsRetry documents why Groups defaults to X25519 only:
// with pion's client default (X25519 first, X25519MLKEM768 also offered) a
// pion server, which prefers the hybrid group, answers with a
// HelloRetryRequest: an extra round trip and a fragmented ClientHello2.
func TestPionDefaultGroupsRetry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	backend := newBackend(t)
	relay := startRelay(t, backend.Addr(), dtls.PSK{Identity: testIdentity, Key: testKey})
	dial(t, ctx, DeviceConfig{
		Server: relay.addr(), Identity: testIdentity, Key: testKey, Endpoint: "hrr",
		Groups: []elliptic.Curve{elliptic.X25519, elliptic.X25519MLKEM768, elliptic.P256, elliptic.P384},
	})
	_, out := relay.tap.datagrams()
	if n := groupRetries(t, out); n != 1 {
		t.Errorf("%d group HelloRetryRequests, want 1", n)
	}
}

func TestDeviceConfigErrors(t *testing.T) {
	base := DeviceConfig{Server: "127.0.0.1:1", Identity: []byte("id"), Key: []byte("k"), Endpoint: "ep"}
	tests := []struct {
		name   string
		modify func(*DeviceConfig)
	}{
		{"no server", func(c *DeviceConfig) { c.Server = "" }},
		{"no identity", func(c *DeviceConfig) { c.Identity = nil }},
		{"no key", func(c *DeviceConfig) { c.Key = nil }},
		{"no endpoint", func(c *DeviceConfig) { c.Endpoint = "" }},
		{"bad version", func(c *DeviceConfig) { c.Version = "1.1" }},
		{"bad mode", func(c *DeviceConfig) { c.Mode = "psk_ecdhe" }},
		{"duplicate mode", func(c *DeviceConfig) { c.Mode = "psk_ke,psk_ke" }},
		{"bad hash", func(c *DeviceConfig) { c.Hash = crypto.SHA1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.modify(&cfg)
			if d, err := Dial(context.Background(), cfg); err == nil {
				_ = d.Close()
				t.Fatal("Dial succeeded")
			}
		})
	}
}

func TestLinks(t *testing.T) {
	d := &Device{resources: map[string][]byte{"/3/0/0": nil, "/10/0/1": nil, "/3/1/0": nil, "/1/0/1": nil, "/3/0/1": nil}}
	if got, want := d.links(), "</1/0>,</3/0>,</3/1>,</10/0>"; got != want {
		t.Errorf("links = %q, want %q", got, want)
	}
	_ = message.TextPlain
}
