package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// The run: a fleet of well-behaved devices of every handshake kind, plus a
// few scripted misbehaviours so every panel has something to show. All of
// it on loopback; every key is fresh from crypto/rand and lives only in the
// run's temporary directory.

// profile is one kind of fleet device (the demo's mix).
type profile struct {
	version string
	mode    string
	suite   ciphersuite.ID
	modes   pskstore.Modes
	legacy  bool
}

var fleetProfiles = []profile{
	{version: "1.3", mode: devsim.ModePSKDHE, modes: pskstore.ModeDHE},
	{version: "1.3", mode: devsim.ModePSKDHE, modes: pskstore.ModeDHE},
	{version: "1.2", suite: ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256},
	{version: "1.3", mode: devsim.ModePSKDHE, suite: ciphersuite.TLS_CHACHA20_POLY1305_SHA256, modes: pskstore.ModeDHE},
	{version: "1.2", suite: ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, legacy: true},
	{version: "1.3", mode: devsim.ModePSK, modes: pskstore.ModeDHE | pskstore.ModeKE},
}

type device struct {
	key pskstore.Key
	cfg devsim.DeviceConfig
}

type scenario struct {
	gwAddr   string
	backend  *devsim.Backend
	fleet    []device
	spares   map[string]pskstore.Key // by role
	keys     []pskstore.Key          // everything in the key file
	duration time.Duration
	faults   map[string]bool // by name, or "all"
	logf     func(string, ...any)
}

func secret() []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

// newScenario makes the keys: n fleet devices and the spare identities the
// misbehaviours use.
func newScenario(n int, gwAddr string, backend *devsim.Backend, duration time.Duration, faults map[string]bool, logf func(string, ...any)) *scenario {
	s := &scenario{gwAddr: gwAddr, backend: backend, duration: duration, faults: faults, logf: logf, spares: map[string]pskstore.Key{}}
	for i := range n {
		p := fleetProfiles[i%len(fleetProfiles)]
		k := pskstore.Key{
			Identity: fmt.Appendf(nil, "fleet-%03d", i+1),
			Secret:   secret(),
			Endpoint: fmt.Sprintf("urn:dev:fleet-%03d", i+1),
			Modes:    p.modes,
			Legacy:   p.legacy,
		}
		cfg := s.deviceConfig(k, p.version, p.mode)
		if p.suite != 0 {
			cfg.CipherSuites = []ciphersuite.ID{p.suite}
		}
		s.fleet = append(s.fleet, device{key: k, cfg: cfg})
		s.keys = append(s.keys, k)
	}
	for _, role := range []string{"wrongkey", "r3", "r5", "l1", "storm", "lab-1", "lab-2"} {
		k := pskstore.Key{
			Identity: []byte("spare-" + role),
			Secret:   secret(),
			Endpoint: "urn:dev:spare-" + role,
			Modes:    pskstore.ModeDHE,
		}
		switch role {
		case "r5":
			k.ServerName = "gw.example.net"
		case "lab-1", "lab-2":
			k.Backend = "lab"
		}
		s.spares[role] = k
		s.keys = append(s.keys, k)
	}
	return s
}

func (s *scenario) deviceConfig(k pskstore.Key, version, mode string) devsim.DeviceConfig {
	return devsim.DeviceConfig{
		Server: s.gwAddr, Identity: k.Identity, Key: k.Secret, Endpoint: k.Endpoint,
		Version: version, Mode: mode, Lifetime: time.Hour,
		HandshakeTimeout: 5 * time.Second, ACKTimeout: time.Second, MaxRetransmit: 2,
	}
}

func (s *scenario) writeKeys(path string) error { return file.Save(path, s.keys) }

// run drives everything until ctx ends; it returns when every goroutine has.
func (s *scenario) run(ctx context.Context) {
	var wg sync.WaitGroup
	spread := min(12*time.Second, s.duration/6)
	for i, d := range s.fleet {
		wg.Go(func() {
			delay := time.Duration(i) * spread / time.Duration(len(s.fleet))
			s.fleetDevice(ctx, d, delay, mrand.New(mrand.NewPCG(uint64(i), 7)))
		})
	}
	at := func(name string, fracs []float64, what string, fn func(context.Context)) {
		if !s.faults[name] && !s.faults["all"] {
			return
		}
		for _, frac := range fracs {
			wg.Go(func() {
				if !sleep(ctx, time.Duration(frac*float64(s.duration))) {
					return
				}
				s.logf("t+%3.0fs  %s", frac*s.duration.Seconds(), what)
				fn(ctx)
			})
		}
	}
	// Faults recur: a counter's first increment creates its series, and
	// rate() over a series shows nothing until its second sample moves.
	at("wrongkey", []float64{0.14, 0.30, 0.44, 0.70}, "a device with a wrong key", s.wrongKey)
	at("unknown", []float64{0.20, 0.50, 0.78}, "an unknown identity", s.unknownIdentity)
	at("policy", []float64{0.24, 0.58}, "policy refusals: DTLS 1.2 plain PSK and psk_ke without the key allowing them (R3), wrong SNI (R5)", s.policy)
	at("l1", []float64{0.34, 0.64}, "a device registering as another endpoint (L1)", s.l1)
	at("lab", []float64{0.28}, "2 devices of a backend that is down (upstream errors)", s.lab)
	at("stray", []float64{0.40, 0.46}, "stray datagrams: not ClientHellos, oversized", s.stray)
	at("flood", []float64{0.52}, "ClientHello flood from 60 ports of 127.0.0.2 that never answer (per-IP handshake rate)", s.flood)
	at("storm", []float64{0.60}, "a device registering 12 times in a row (register rate, 4.29)", s.storm)
	wg.Wait()
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// fleetDevice connects, registers, lets the backend observe its battery
// level and then updates, notifies and gets read, reconnecting now and then.
func (s *scenario) fleetDevice(ctx context.Context, d device, delay time.Duration, rng *mrand.Rand) {
	if !sleep(ctx, delay) {
		return
	}
	for ctx.Err() == nil {
		dev, err := devsim.Dial(ctx, d.cfg)
		if err != nil {
			sleep(ctx, 2*time.Second)
			continue
		}
		s.session(ctx, dev, d.cfg.Endpoint, rng)
		_ = dev.Close()
		sleep(ctx, time.Duration(500+rng.IntN(2500))*time.Millisecond)
	}
}

func (s *scenario) session(ctx context.Context, dev *devsim.Device, ep string, rng *mrand.Rand) {
	op := func(fn func(context.Context) error) error {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return fn(octx)
	}
	if err := op(func(c context.Context) error { _, err := dev.Register(c); return err }); err != nil {
		return
	}
	_ = op(func(c context.Context) error {
		ch, err := s.backend.Observe(c, ep, "/3/0/9")
		if err == nil {
			go func() {
				for range ch {
				}
			}()
		}
		return err
	})
	// Most sessions last the whole run; about one device in four reboots.
	life := s.duration * 2
	if rng.IntN(4) == 0 {
		life = time.Duration(15+rng.IntN(30)) * time.Second
	}
	end := time.Now().Add(life)
	battery := 100
	for time.Now().Before(end) {
		if !sleep(ctx, time.Duration(1000+rng.IntN(2000))*time.Millisecond) {
			return
		}
		switch r := rng.IntN(100); {
		case r < 35:
			_ = op(dev.Update)
		case r < 75:
			battery = max(1, battery-rng.IntN(2))
			_ = op(func(c context.Context) error { return dev.Notify(c, fmt.Appendf(nil, "%d", battery)) })
		default:
			_ = op(func(c context.Context) error { _, err := s.backend.Read(c, ep, "/3/0/0"); return err })
		}
	}
	if rng.IntN(2) == 0 {
		_ = op(dev.Deregister)
	}
}

// dialOnce makes one handshake attempt and, if it succeeds, runs then.
func (s *scenario) dialOnce(ctx context.Context, cfg devsim.DeviceConfig, then func(*devsim.Device)) {
	dev, err := devsim.Dial(ctx, cfg)
	if err != nil {
		return
	}
	defer dev.Close()
	if then != nil {
		then(dev)
	}
}

func (s *scenario) wrongKey(ctx context.Context) {
	k := s.spares["wrongkey"]
	k.Secret = secret() // not the one in the key file
	s.dialOnce(ctx, s.deviceConfig(k, "1.3", devsim.ModePSKDHE), nil)
}

func (s *scenario) unknownIdentity(ctx context.Context) {
	k := pskstore.Key{Identity: []byte("nobody"), Secret: secret(), Endpoint: "urn:dev:nobody"}
	s.dialOnce(ctx, s.deviceConfig(k, "1.3", devsim.ModePSKDHE), nil)
}

func (s *scenario) policy(ctx context.Context) {
	k := s.spares["r3"]
	cfg := s.deviceConfig(k, "1.2", "")
	cfg.CipherSuites = []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM_8} // plain PSK, key not legacy
	s.dialOnce(ctx, cfg, nil)
	s.dialOnce(ctx, s.deviceConfig(k, "1.3", devsim.ModePSK), nil) // psk_ke, key lists only psk_dhe_ke
	cfg = s.deviceConfig(s.spares["r5"], "1.3", devsim.ModePSKDHE)
	cfg.ServerName = "other.example.net" // the key is bound to gw.example.net
	s.dialOnce(ctx, cfg, nil)
}

func (s *scenario) l1(ctx context.Context) {
	cfg := s.deviceConfig(s.spares["l1"], "1.3", devsim.ModePSKDHE)
	cfg.Endpoint = "urn:dev:fleet-001" // someone else's endpoint
	s.dialOnce(ctx, cfg, func(dev *devsim.Device) {
		for range 3 {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, _ = dev.Register(rctx) // 4.03 from the gateway
			cancel()
			sleep(ctx, time.Second)
		}
	})
}

// lab: devices whose backend ("lab") points at a closed port. Each Register
// the gateway forwards meets ICMP port unreachable on the upstream socket.
func (s *scenario) lab(ctx context.Context) {
	var wg sync.WaitGroup
	for _, role := range []string{"lab-1", "lab-2"} {
		cfg := s.deviceConfig(s.spares[role], "1.3", devsim.ModePSKDHE)
		cfg.MaxRetransmit = -1
		wg.Go(func() {
			s.dialOnce(ctx, cfg, func(dev *devsim.Device) {
				for i := 0; i < 6 && ctx.Err() == nil; i++ {
					rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					_, _ = dev.Register(rctx)
					cancel()
					sleep(ctx, 2*time.Second)
				}
			})
		})
	}
	wg.Wait()
}

func (s *scenario) stray(ctx context.Context) {
	conn, err := net.Dial("udp", s.gwAddr)
	if err != nil {
		return
	}
	defer conn.Close()
	junk := make([]byte, 64)
	big := make([]byte, 20000) // over limits.max_datagram (18432)
	for i := range 12 {
		_, _ = rand.Read(junk)
		junk[0] = 23 // application data, from an address with no session
		_, _ = conn.Write(junk)
		if i%4 == 0 {
			_, _ = conn.Write(big)
		}
		if !sleep(ctx, 400*time.Millisecond) {
			return
		}
	}
}

// flood replays one real ClientHello from 60 fresh ports of another
// loopback address (127.0.0.2) and never answers: spoofed sources, faster
// than limits.handshake_rate allows for one IP. The first ones become
// embryonic sessions that time out; the rest are dropped as rate_limited.
func (s *scenario) flood(ctx context.Context) {
	hello, err := captureClientHello(ctx)
	if err != nil {
		s.logf("flood: %v", err)
		return
	}
	raddr, err := net.ResolveUDPAddr("udp", s.gwAddr)
	if err != nil {
		return
	}
	var conns []*net.UDPConn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range 60 {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}, raddr)
		if err != nil {
			s.logf("flood: %v", err)
			return
		}
		conns = append(conns, c)
		_, _ = c.Write(hello)
		if !sleep(ctx, 15*time.Millisecond) {
			return
		}
	}
	sleep(ctx, 8*time.Second) // keep the ports: answers land somewhere
}

// captureClientHello has a pion DTLS client send its first flight to a
// socket of ours and returns that datagram.
func captureClientHello(ctx context.Context) ([]byte, error) {
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		return nil, err
	}
	defer sink.Close()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		return nil, err
	}
	psk := dtls.PSK{Identity: []byte("flood"), Key: secret(), Hash: crypto.SHA256}
	conn, err := dtls.Client(pc, sink.LocalAddr(),
		dtls.WithPSK(func() ([]dtls.PSK, error) { return []dtls.PSK{psk}, nil }, nil),
		dtls.WithMinVersion(protocol.Version1_2), dtls.WithMaxVersion(protocol.Version1_2),
		dtls.WithCipherSuites(ciphersuite.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	defer conn.Close()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	go func() { _ = conn.HandshakeContext(hctx) }()
	_ = sink.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := sink.ReadFromUDP(buf)
	if err != nil {
		return nil, fmt.Errorf("no ClientHello: %w", err)
	}
	return buf[:n], nil
}

func (s *scenario) storm(ctx context.Context) {
	s.dialOnce(ctx, s.deviceConfig(s.spares["storm"], "1.3", devsim.ModePSKDHE), func(dev *devsim.Device) {
		for range 12 {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, _ = dev.Register(rctx)
			cancel()
			if !sleep(ctx, 300*time.Millisecond) {
				return
			}
		}
	})
}

// gatewayConfig writes the gateway's configuration into dir.
func gatewayConfig(dir, gwAddr, adminAddr, backendAddr, labAddr string) (string, error) {
	cfg := fmt.Sprintf(`# Written by tools/dashboard-render for one screenshot run.
listeners:
  - address: %q
backends:
  dm:
    address: %q
  lab:
    address: %q
default_backend: dm
store:
  type: file
  path: keys.yaml
dtls:
  handshake_timeout: 5s
log:
  level: warn
  format: json
limits:
  handshake_rate: 20
  handshake_burst: 20
admin:
  address: %q
`, gwAddr, backendAddr, labAddr, adminAddr)
	path := filepath.Join(dir, "gateway.yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}
