// Package demo runs the gateway's main job on embedded defaults, all on
// loopback: an in-memory key store with fresh random keys, a built-in LwM2M
// backend (internal/devsim), the gateway and a fleet of simulated devices
// of mixed DTLS versions and modes, printing registrations and a summary.
// It is what `gateway demo` runs; it owns no flag nor signal (cmd/gateway
// does) and is not for production.
package demo

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/gateway"
	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/memory"
)

// profile is one kind of simulated device in the demo fleet.
type profile struct {
	label   string
	version string
	mode    string
	suite   ciphersuite.ID
	modes   pskstore.Modes
	legacy  bool
}

var profiles = []profile{
	{label: "DTLS 1.3 psk_dhe_ke", version: "1.3", mode: devsim.ModePSKDHE, modes: pskstore.ModeDHE},
	{label: "DTLS 1.2 PSK CCM_8 (legacy)", version: "1.2", suite: ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, legacy: true},
	{label: "DTLS 1.3 psk_ke (allowed for this key)", version: "1.3", mode: devsim.ModePSK, modes: pskstore.ModeDHE | pskstore.ModeKE},
	{label: "DTLS 1.2 ECDHE-PSK", version: "1.2", suite: ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256},
	{label: "DTLS 1.3 ChaCha20", version: "1.3", mode: devsim.ModePSKDHE, suite: ciphersuite.TLS_CHACHA20_POLY1305_SHA256, modes: pskstore.ModeDHE},
}

// Run runs the demo with devices simulated devices until ctx is done,
// then lets the devices deregister and the gateway drain. Progress lines go
// to out; log receives the components' own logs (nil: none).
func Run(ctx context.Context, devices int, out io.Writer, log *zap.Logger) error {
	if devices < 1 {
		return errors.New("demo: at least one device")
	}
	if log == nil {
		log = zap.NewNop()
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	lw := &lockedWriter{w: out}

	backend, err := devsim.NewBackend("127.0.0.1:0", log.Named("backend"))
	if err != nil {
		return err
	}
	defer backend.Close()
	backend.OnEvent(func(ev devsim.Event) {
		switch ev.Kind {
		case devsim.EventRegistered:
			lw.printf("registered   %-14s at %s (lifetime %s, binding %s) from %s\n",
				ev.Endpoint, ev.Registration.Location, ev.Registration.Lifetime, ev.Registration.Binding, ev.From)
		case devsim.EventDeregistered:
			lw.printf("deregistered %-14s\n", ev.Endpoint)
		}
	})

	keys := make([]pskstore.Key, devices)
	for i := range keys {
		p := profiles[i%len(profiles)]
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return err
		}
		keys[i] = pskstore.Key{
			Identity: []byte(fmt.Sprintf("demo-device-%03d", i+1)),
			Secret:   secret,
			Endpoint: fmt.Sprintf("urn:dev:demo-%03d", i+1),
			Modes:    p.modes,
			Legacy:   p.legacy,
		}
	}
	store, err := memory.New(keys...)
	if err != nil {
		return err
	}
	srv, err := gateway.New(gateway.Config{
		Listeners: []gateway.Listener{{Address: "127.0.0.1:0"}},
		Store:     store,
		Backends:  map[string]string{"demo": backend.Addr().String()},
		Logger:    log.Named("gateway"),
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	gwAddr := srv.Addrs()[0].String()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(context.Background()) }()
	lw.printf("gateway      listening on %s (DTLS 1.3 + 1.2, PSK), backend LwM2M server on %s\n", gwAddr, backend.Addr())
	lw.printf("fleet        %d simulated devices; Ctrl-C to stop\n", devices)

	var wg sync.WaitGroup
	for i, k := range keys {
		p := profiles[i%len(profiles)]
		cfg := devsim.DeviceConfig{
			Server: gwAddr, Identity: k.Identity, Key: k.Secret, Version: p.version, Mode: p.mode,
			Endpoint: k.Endpoint, Lifetime: time.Hour, Logger: log.Named("device"),
		}
		if p.suite != 0 {
			cfg.CipherSuites = []ciphersuite.ID{p.suite}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runDevice(ctx, cfg, p.label, backend, lw)
		}()
	}

	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-serveErr:
			return err
		case <-tick.C:
			printSummary(lw, srv.Stats(), len(backend.Registrations()))
		}
	}
	stop()
	lw.printf("stopping     devices deregister, gateway drains\n")
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-serveErr; err != nil && !errors.Is(err, gateway.ErrServerClosed) {
		return err
	}
	printSummary(lw, srv.Stats(), len(backend.Registrations()))
	return nil
}

// runDevice connects, registers, then updates, answers the backend's
// reads and sends notifications until ctx ends, and deregisters.
func runDevice(ctx context.Context, cfg devsim.DeviceConfig, label string, backend *devsim.Backend, out *lockedWriter) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	d, err := devsim.Dial(dctx, cfg)
	cancel()
	if err != nil {
		out.printf("device       %s: handshake failed: %v\n", cfg.Endpoint, err)
		return
	}
	defer d.Close()
	out.printf("connected    %-14s %s\n", cfg.Endpoint, label)
	if _, err := d.Register(ctx); err != nil {
		out.printf("device       %s: register: %v\n", cfg.Endpoint, err)
		return
	}
	notes, err := backend.Observe(ctx, cfg.Endpoint, "/3/0/9")
	if err != nil {
		out.printf("backend      observe %s: %v\n", cfg.Endpoint, err)
	}
	go func() {
		for range notes {
		}
	}()
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			dr, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_ = d.Deregister(dr)
			cancel()
			return
		case <-t.C:
		}
		switch n % 3 {
		case 0:
			_ = d.Update(ctx)
		case 1:
			if v, err := backend.Read(ctx, cfg.Endpoint, "/3/0/0"); err == nil {
				out.printf("read         %-14s /3/0/0 = %q (backend-initiated, through the gateway)\n", cfg.Endpoint, v)
			}
		case 2:
			_ = d.Notify(ctx, []byte(fmt.Sprint(90-n%50)))
		}
	}
}

func printSummary(out *lockedWriter, st gateway.Stats, registered int) {
	var failed uint64
	for _, v := range st.HandshakesFailed {
		failed += v
	}
	out.printf("summary      sessions %d, handshakes ok %d / failed %d, registered %d, datagrams to backend %d / to devices %d\n",
		st.Established, st.HandshakesOK, failed, registered, st.DatagramsToBackend, st.DatagramsToDevice)
}

// lockedWriter serialises lines from many goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, time.Now().Format("15:04:05 ")+format, args...)
}
