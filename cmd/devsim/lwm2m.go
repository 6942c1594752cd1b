package main

import (
	"cmp"
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
)

// Operations of a message pattern (--pattern). Register and observe also
// run once after every handshake in LwM2M mode (observe only when the
// pattern has notify).
const (
	opRegister = "register" // device: POST /rd?ep=… (again)
	opUpdate   = "update"   // device: POST /rd/{location}
	opNotify   = "notify"   // device: 2.05 notification on the backend's observation of /3/0/9
	opRead     = "read"     // backend: GET /3/0/0, answered by the device through the gateway
	opSend     = "send"     // device: LwM2M Send, POST /dp with SenML JSON
	opObserve  = "observe"  // backend: GET Observe=0 /3/0/9 (setup only)
	opEcho     = "echo"     // raw mode: one request of --size bytes
	opWarmup   = "warmup"   // raw mode: --warmup, one request per device
	opReboot   = "reboot"   // --reboot-every: a new handshake from the same port and Register
	opWake     = "wake"     // --sleep: the Update a device sends when it wakes up; raw --wake-after: one request per device after the idle time
)

// lwm2mOps are the operations --pattern accepts in LwM2M mode.
var lwm2mOps = []string{opUpdate, opNotify, opRead, opSend, opRegister}

// needsBackend reports whether an operation is driven from the backend
// side, so the tool must run the backend itself (--backend).
func needsBackend(op string) bool { return op == opRead || op == opNotify }

// lwm2mClient is one LwM2M-mode device: a devsim.Device, and the embedded
// backend when the pattern has backend-side operations.
type lwm2mClient struct {
	dev        *devsim.Device
	backend    *devsim.Backend // nil without --backend
	observe    bool
	deregister bool
	n          atomic.Int64
}

// dialLwM2M runs the DTLS handshake of device i (devsim.Dial). Handshakes
// the device runs later by itself (an idle re-handshake, a reconnection)
// and reboots are reported to onHandshake with their kind.
func dialLwM2M(ctx context.Context, o *options, i int, laddr string, p *profile, k pskstore.Key, backend *devsim.Backend, onHandshake func(kind string, d time.Duration, err error)) (*lwm2mClient, error) {
	ep := k.Endpoint
	if ep == "" {
		ep = string(k.Identity)
	}
	cfg := devsim.DeviceConfig{
		Server: o.server, Identity: k.Identity, Key: k.Secret, Hash: k.Hash,
		Version: p.version, Mode: p.mode, CipherSuites: []ciphersuite.ID{suiteFor(p, k)},
		ServerName: o.serverName, Endpoint: ep, Lifetime: o.lifetime, HandshakeTimeout: o.timeout,
		LocalAddr: laddr, FlightInterval: o.flightInterval, Loss: o.lossFor(i),
		RehandshakeIdle: o.rehandshakeIdle, AutoReconnect: o.autoReconnect,
		ACKTimeout: o.ackTimeout, MaxRetransmit: cmp.Or(o.maxRetransmit, -1), // devsim: negative is none, 0 the default
		OnHandshake: func(ev devsim.HandshakeEvent) {
			kind := map[devsim.HandshakeReason]string{devsim.HandshakeIdle: kindIdle, devsim.HandshakeReconnect: kindReconnect, devsim.HandshakeReboot: kindReboot}[ev.Reason]
			if kind != "" {
				onHandshake(kind, ev.Duration, ev.Err)
			}
		},
	}
	d, err := devsim.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &lwm2mClient{dev: d, backend: backend, observe: o.pattern.has(opNotify), deregister: o.deregister}, nil
}

// setup registers the device and, for a pattern with notify, has the
// backend observe its battery level.
func (c *lwm2mClient) setup(ctx context.Context, step stepFunc) error {
	if err := step(opRegister, func() error { _, err := c.dev.Register(ctx); return err }); err != nil {
		return err
	}
	if !c.observe || c.backend == nil {
		return nil
	}
	return step(opObserve, func() error {
		// Notifications land in the backend's buffer, which drops what
		// nobody reads: the tool measures the device's round trip.
		_, err := c.backend.Observe(ctx, c.dev.Endpoint(), "/3/0/9")
		return err
	})
}

func (c *lwm2mClient) do(ctx context.Context, op string) error {
	n := c.n.Add(1)
	switch op {
	case opUpdate:
		return c.dev.Update(ctx)
	case opRegister:
		_, err := c.dev.Register(ctx)
		return err
	case opNotify:
		return c.dev.Notify(ctx, fmt.Appendf(nil, "%d", 100-n%100))
	case opRead:
		_, err := c.backend.Read(ctx, c.dev.Endpoint(), "/3/0/0")
		return err
	case opSend:
		return c.dev.Send(ctx, fmt.Appendf(nil, `[{"n":"/3/0/9","v":%d,"t":%d}]`, 100-n%100, time.Now().Unix()))
	}
	return fmt.Errorf("unknown operation %q", op)
}

// reboot reboots the device (devsim.Device.Reboot: same socket, a new
// handshake, Register) and has the backend observe it again when the
// pattern notifies: the device forgot its observation.
func (c *lwm2mClient) reboot(ctx context.Context, step stepFunc) error {
	if err := step(opReboot, func() error { return c.dev.Reboot(ctx) }); err != nil {
		return err
	}
	return c.observeAgain(ctx, step)
}

func (c *lwm2mClient) observeAgain(ctx context.Context, step stepFunc) error {
	if !c.observe || c.backend == nil {
		return nil
	}
	return step(opObserve, func() error {
		_, err := c.backend.Observe(ctx, c.dev.Endpoint(), "/3/0/9")
		return err
	})
}

// sleep turns the device's radio off for d, then sends an Update (after a
// new handshake if --rehandshake-idle is shorter than d).
func (c *lwm2mClient) sleep(ctx context.Context, d time.Duration, step stepFunc) error {
	if err := c.dev.Sleep(ctx, d); err != nil {
		return err
	}
	loc := c.dev.Location()
	if err := step(opWake, func() error { return c.dev.Update(ctx) }); err != nil {
		return err
	}
	if c.dev.Location() != loc { // registered again (4.04): observe again
		return c.observeAgain(ctx, step)
	}
	return nil
}

func (c *lwm2mClient) stats() (devsim.DeviceStats, devsim.LossStats) {
	return c.dev.Stats(), c.dev.LossStats()
}

func (c *lwm2mClient) close(ctx context.Context) {
	if c.deregister && c.dev.Location() != "" {
		_ = c.dev.Deregister(ctx)
	}
	_ = c.dev.Close()
}
