package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/pskstore"
)

// client is one connected simulated device.
type client interface {
	// setup runs what the device does right after its handshake (LwM2M:
	// Register, and the backend's Observe when the pattern notifies),
	// reporting each step through step.
	setup(ctx context.Context, step stepFunc) error
	// do runs one operation of the message pattern and waits for its end.
	do(ctx context.Context, op string) error
	// close ends the session (LwM2M: after De-register with --deregister).
	close(ctx context.Context)
	// stats returns the device's lifecycle counts and what --loss did to
	// its datagrams.
	stats() (devsim.DeviceStats, devsim.LossStats)
}

// stepFunc times f and records it as one request of operation op.
type stepFunc func(op string, f func() error) error

type slotState uint8

const (
	stateDown slotState = iota
	stateConnecting
	stateUp
)

// slot is one device of the fleet: its handshake, its key, and its current
// connection if any.
type slot struct {
	idx  int
	prof *profile
	key  pskstore.Key

	mu       sync.Mutex
	state    slotState
	c        client
	inflight int
}

// runner runs the phases of a load run (see run in main.go).
type runner struct {
	o       *options
	slots   []*slot
	st      *stats
	backend *embeddedBackend // nil without --backend
	tmpl    []byte           // raw mode request

	connSem chan struct{} // bounds handshakes in flight (--concurrency)
	cursor  atomic.Uint64 // round-robin position for messages

	opMu  sync.Mutex
	opSeq *wrr

	rngMu sync.Mutex
	rng   *rand.Rand

	bg sync.WaitGroup // churn reconnections, reboots, sleeps

	fresh     *freshAddrs // --fresh-ips
	loopback4 bool        // the server is on IPv4 loopback
}

func newRunner(o *options, keys []pskstore.Key, picked []int, profs []*profile, backend *embeddedBackend, tmpl []byte) *runner {
	r := &runner{
		o: o, st: newStats(), backend: backend, tmpl: tmpl,
		connSem: make(chan struct{}, o.concurrency),
		opSeq:   newWRR(o.pattern.weights),
		rng:     rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1)),
		fresh:   newFreshAddrs(),
	}
	if a, err := net.ResolveUDPAddr("udp", o.server); err == nil && a.IP.To4() != nil && a.IP.IsLoopback() {
		r.loopback4 = true
	}
	r.slots = make([]*slot, len(profs))
	for i, p := range profs {
		s := &slot{idx: i, prof: p}
		if keys != nil {
			s.key = keys[picked[i]]
		}
		r.slots[i] = s
	}
	return r
}

// localAddr is the address device i binds for a new connection: with
// --fresh-ips one never used before, with --source-ips one of that many
// 127.1.x.y (by the device's number counted from --key-offset, so that
// processes sharing a key file share out the addresses and, with
// --source-port-base, the ports), else the default ("").
func (r *runner) localAddr(i int) string {
	g := r.o.keyOffset + i
	switch {
	case !r.loopback4:
		return "" // the spreads are loopback addresses: for a loopback server only
	case r.o.freshIPs:
		return r.fresh.addr()
	case r.o.sourceIPs > 1 && r.o.sourcePort > 0:
		return net.JoinHostPort(spreadAddr(g, r.o.sourceIPs).String(), strconv.Itoa(r.o.sourcePort+g/r.o.sourceIPs))
	case r.o.sourceIPs > 1:
		return net.JoinHostPort(spreadAddr(g, r.o.sourceIPs).String(), "0")
	}
	return ""
}

// dial runs one device's handshake.
func (r *runner) dial(ctx context.Context, s *slot) (client, error) {
	laddr := r.localAddr(s.idx)
	if r.o.raw {
		c, err := dialRaw(ctx, r.o, laddr, r.o.lossFor(s.idx), s.prof, s.key, r.tmpl, func(err error) {
			r.st.refused(s.prof, err)
		})
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	var b *devsim.Backend
	if r.backend != nil {
		b = r.backend.lwm2m
	}
	c, err := dialLwM2M(ctx, r.o, s.idx, laddr, s.prof, s.key, b, func(kind string, d time.Duration, err error) {
		r.st.handshake(kind, s.prof, d, err)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// setState moves s to state (and client c when up), keeping the count of
// connected devices. The caller holds s.mu.
func (r *runner) setState(s *slot, state slotState, c client) {
	if s.state == stateUp && state != stateUp {
		r.st.up.Add(-1)
	}
	if state == stateUp && s.state != stateUp {
		r.st.up.Add(1)
	}
	s.state, s.c = state, c
}

// connect runs the handshake and the setup of slot s, which the caller
// has marked connecting; it ends with s up or down. The handshake is
// recorded after the setup's first exchange: a session the gateway ends
// before answering anything (devsim.ErrRefused: a refusal by policy after
// the handshake) counts as a failed handshake, with its alert, not as a
// completed one and a failed request (issue 13).
//
// With retry set, a failed handshake is recorded as retried and connect
// reports it (true) for the caller to try again; a refusal after the
// handshake is never retried: the policy would refuse again.
func (r *runner) connect(ctx context.Context, s *slot, kind string, retry bool) (retryable bool) {
	hctx, cancel := context.WithTimeout(ctx, r.o.timeout)
	t0 := time.Now()
	c, err := r.dial(hctx, s)
	hsDur := time.Since(t0)
	cancel()
	if err != nil && retry && ctx.Err() == nil {
		r.st.retried(err)
		s.mu.Lock()
		r.setState(s, stateDown, nil)
		s.mu.Unlock()
		return true
	}
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, r.o.timeout)
		err = c.setup(sctx, func(op string, f func() error) error {
			t := time.Now()
			err := f()
			if !errors.Is(err, devsim.ErrRefused) {
				r.st.op(op, time.Since(t), err)
			}
			return err
		})
		cancel()
		if errors.Is(err, devsim.ErrRefused) {
			r.st.handshake(kind, s.prof, hsDur, err)
		} else {
			r.st.handshake(kind, s.prof, hsDur, nil)
		}
		if err != nil {
			r.closeClient(ctx, c)
		}
	} else {
		r.st.handshake(kind, s.prof, hsDur, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		r.setState(s, stateDown, nil)
		return false
	}
	r.setState(s, stateUp, c)
	return false
}

// connectRetrying is the connect phase's connect: up to --connect-retries
// more tries after a failed handshake, 1 s, 2 s, ... apart, from the same
// local address when it is fixed (--source-port-base), as a device whose
// registration went unanswered does.
func (r *runner) connectRetrying(ctx context.Context, s *slot) {
	for try := 0; ; try++ {
		if !r.connect(ctx, s, kindConnect, try < r.o.connectRetries) {
			return
		}
		if !sleepUntil(ctx, time.Now().Add(time.Duration(try+1)*time.Second)) {
			return
		}
		s.mu.Lock()
		s.state = stateConnecting
		s.mu.Unlock()
	}
}

// closeClient ends c's session and adds its counts to the run's.
func (r *runner) closeClient(ctx context.Context, c client) {
	c.close(ctx)
	r.st.addClient(c.stats())
}

// connectAll is the connect phase: every device once, at --connect-rate,
// at most --concurrency handshakes in flight.
func (r *runner) connectAll(ctx context.Context) {
	var wg sync.WaitGroup
	start := time.Now()
	for i, s := range r.slots {
		if r.o.connectRate > 0 {
			due := start.Add(time.Duration(float64(i) / r.o.connectRate * float64(time.Second)))
			if !sleepUntil(ctx, due) {
				break
			}
		}
		select {
		case r.connSem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		s.mu.Lock()
		s.state = stateConnecting
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-r.connSem }()
			r.connectRetrying(ctx, s)
		}()
	}
	wg.Wait()
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// closeAll ends every session, 64 at a time.
func (r *runner) closeAll(ctx context.Context) {
	r.bg.Wait()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, s := range r.slots {
		s.mu.Lock()
		c := s.c
		r.setState(s, stateDown, nil)
		s.mu.Unlock()
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, r.o.timeout)
			defer cancel()
			r.closeClient(cctx, c)
		}()
	}
	wg.Wait()
}
