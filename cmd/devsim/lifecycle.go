package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/pion/dtls/v4/pkg/protocol/handshake"
)

// Handshake kinds in the summary: why a device ran a handshake.
const (
	kindConnect   = "connect"   // connect phase
	kindChurn     = "churn"     // --churn: a new socket, a new handshake
	kindReboot    = "reboot"    // --reboot-every: same socket, state forgotten
	kindIdle      = "idle"      // --rehandshake-idle: same socket, before a request
	kindReconnect = "reconnect" // --auto-reconnect: same socket, after a lost session
)

// parseLoss parses --loss: comma-separated key=value pairs. drop, dup,
// delay and jitter apply to both directions, or with an out- or in- prefix
// to one (out: device to gateway); drop-first=N loses the first N
// datagrams (also with a prefix); hello-drop=N loses each device's first N
// ClientHellos, hvr-drop=N its first N HelloVerifyRequests (DTLS 1.2),
// sh-drop=N its first N ServerHellos (a DTLS 1.3 HelloRetryRequest is
// one); seed=N makes the choices repeatable (each device adds its index).
func parseLoss(spec string) (*devsim.Loss, error) {
	l := &devsim.Loss{}
	for item := range strings.SplitSeq(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return nil, fmt.Errorf("--loss %q: %q is not key=value", spec, item)
		}
		dirs := []*devsim.Impairment{&l.Out, &l.In}
		switch {
		case strings.HasPrefix(k, "out-"):
			k, dirs = k[4:], dirs[:1]
		case strings.HasPrefix(k, "in-"):
			k, dirs = k[3:], dirs[1:]
		}
		var err error
		set := func(f func(m *devsim.Impairment)) {
			for _, m := range dirs {
				f(m)
			}
		}
		switch k {
		case "drop", "dup":
			var p float64
			if p, err = strconv.ParseFloat(v, 64); err == nil && (p < 0 || p > 1) {
				err = fmt.Errorf("want 0..1")
			}
			set(func(m *devsim.Impairment) {
				if k == "drop" {
					m.Drop = p
				} else {
					m.Duplicate = p
				}
			})
		case "delay", "jitter":
			var d time.Duration
			if d, err = time.ParseDuration(v); err == nil && (d < 0 || d > time.Minute) {
				err = fmt.Errorf("want 0..1m")
			}
			set(func(m *devsim.Impairment) {
				if k == "delay" {
					m.Delay = d
				} else {
					m.Jitter = d
				}
			})
		case "drop-first":
			var n int
			if n, err = parseCount(v); err == nil {
				set(func(m *devsim.Impairment) { m.DropFirst = n })
			}
		case "hello-drop", "hvr-drop", "sh-drop":
			if len(dirs) != 2 {
				return nil, fmt.Errorf("--loss %q: %s takes no direction prefix", spec, k)
			}
			var n int
			if n, err = parseCount(v); err == nil {
				m, t := &l.Out, handshake.TypeClientHello
				switch k {
				case "hvr-drop":
					m, t = &l.In, handshake.TypeHelloVerifyRequest
				case "sh-drop":
					m, t = &l.In, handshake.TypeServerHello
				}
				if m.DropHandshake == nil {
					m.DropHandshake = make(map[handshake.Type]int)
				}
				m.DropHandshake[t] = n
			}
		case "seed":
			l.Seed, err = strconv.ParseUint(v, 10, 64)
		default:
			return nil, fmt.Errorf("--loss %q: unknown key %q (drop, dup, delay, jitter, drop-first, each maybe out- or in-; hello-drop, hvr-drop, sh-drop, seed)", spec, k)
		}
		if err != nil {
			return nil, fmt.Errorf("--loss %q: %s: %v", spec, item, err)
		}
	}
	return l, l.Validate()
}

func parseCount(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err == nil && (n < 0 || n > 1_000_000) {
		err = fmt.Errorf("want 0..1000000")
	}
	return n, err
}

// lossFor returns device i's copy of --loss (its own seed), or nil.
func (o *options) lossFor(i int) *devsim.Loss {
	if o.loss == nil {
		return nil
	}
	l := *o.loss
	if l.Seed != 0 {
		l.Seed += uint64(i)
	}
	return &l
}

// freshAddrs hands out loopback addresses this run has not used yet, from
// 127.64.0.0/10 starting at a random place, so that a device connecting
// with --fresh-ips looks never seen before to a gateway that remembers the
// addresses of recent handshakes (issue 12).
type freshAddrs struct {
	mu   sync.Mutex
	next uint32
}

func newFreshAddrs() *freshAddrs { return &freshAddrs{next: rand.Uint32N(1 << 22)} }

func (f *freshAddrs) addr() string {
	f.mu.Lock()
	n := f.next % (1 << 22)
	f.next++
	f.mu.Unlock()
	if n&0xff == 0 || n&0xff == 0xff { // skip .0 and .255 endings
		return f.addr()
	}
	ip := net.IPv4(127, byte(64|n>>16), byte(n>>8), byte(n))
	return net.JoinHostPort(ip.String(), "0")
}

// spreadAddr is device i's address with --source-ips N: one of N loopback
// addresses 127.1.x.y.
func spreadAddr(i, spread int) net.IP {
	n := i%spread + 1
	return net.IPv4(127, 1, byte(n>>8), byte(n))
}

// rebooter is a client that can reboot (LwM2M mode).
type rebooter interface {
	reboot(ctx context.Context, step stepFunc) error
	sleep(ctx context.Context, d time.Duration, step stepFunc) error
}

// lifecycleLoop picks rate-per-device × up idle devices per second and
// runs act on each in the background, until ctx ends (--reboot-every,
// --sleep-rate). The device is back up when act returns nil, down (and
// closed) otherwise.
func (r *runner) lifecycleLoop(ctx, opCtx context.Context, perDevice float64, act func(ctx context.Context, c rebooter) error) {
	const period = 100 * time.Millisecond
	tick := time.NewTicker(period)
	defer tick.Stop()
	acc := 0.0
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		acc += perDevice * float64(r.st.up.Load()) * period.Seconds()
		for ; acc >= 1; acc-- {
			s, c := r.pickIdle()
			if s == nil {
				acc = 0
				break
			}
			rb, ok := c.(rebooter)
			if !ok {
				s.mu.Lock()
				r.setState(s, stateUp, c)
				s.mu.Unlock()
				continue
			}
			r.bg.Add(1)
			go func() {
				defer r.bg.Done()
				err := act(opCtx, rb)
				s.mu.Lock()
				if err != nil {
					r.setState(s, stateDown, nil)
				} else {
					r.setState(s, stateUp, c)
				}
				s.mu.Unlock()
				if err != nil {
					r.closeClient(opCtx, c)
				}
			}()
		}
	}
}
