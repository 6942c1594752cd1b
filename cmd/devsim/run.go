package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// run is the whole command; main only maps its error to an exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if o.flood.rate > 0 {
		return runFlood(ctx, o, stdout, stderr)
	}
	if o.genKeys > 0 {
		keys, err := genKeys(o.genKeys, o.mix, o.serverName)
		if err != nil {
			return err
		}
		if err := writeKeys(o.out, keys); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "devsim: wrote %d keys to %s (mix %s)\n", len(keys), o.out, o.mix)
		return nil
	}
	s, err := runFleet(ctx, o, stderr)
	if err != nil {
		return err
	}
	if o.json {
		if err := s.writeJSON(stdout); err != nil {
			return err
		}
	} else {
		s.writeText(stdout)
	}
	if o.strict && (s.Handshakes.Failed > 0 || s.Requests.Failed > 0) {
		return errFailures
	}
	return nil
}

// runFleet runs the four phases (connect, settle, steady, close) and
// returns the summary.
func runFleet(ctx context.Context, o *options, stderr io.Writer) (*summary, error) {
	profs := o.mix.assign(o.devices)
	var keys []pskstore.Key
	var picked []int
	shared := 0
	if !o.noDTLS {
		var err error
		if keys, err = loadKeys(o.keysPath); err != nil {
			return nil, err
		}
		if o.keyOffset >= len(keys) {
			return nil, usageError{fmt.Sprintf("--key-offset %d: the key file has %d keys", o.keyOffset, len(keys))}
		}
		keys = keys[o.keyOffset:]
		if picked, shared, err = pickKeys(keys, profs); err != nil {
			return nil, err
		}
		if shared > 0 {
			fmt.Fprintf(stderr, "devsim: warning: %d devices share a key with another device; the gateway keeps one session per identity unless sessions.one_per_identity is false\n", shared)
		}
	}
	backend := o.backend
	if backend == nil && o.backendAddr != "" {
		b, err := startBackend(o.backendKind, o.backendAddr)
		if err != nil {
			return nil, err
		}
		defer b.Close()
		backend = b
	}
	var tmpl []byte
	if o.raw {
		var err error
		if tmpl, err = rawRequest(o.method, o.path, o.size); err != nil {
			return nil, usageError{err.Error()}
		}
	}

	r := newRunner(o, keys, picked, profs, backend, tmpl)
	watch := &serverWatch{pid: o.serverPID}
	var prog *progress
	tty := isTerminal(stderr)
	// note prints a phase line (scripts wait for them); on a terminal it
	// first clears the progress line.
	note := func(format string, args ...any) {
		if tty {
			fmt.Fprint(stderr, "\r\033[K")
		}
		fmt.Fprintf(stderr, format, args...)
	}
	if period := o.progress; period >= 0 {
		if period == 0 {
			period = 5 * time.Second
			if tty {
				period = time.Second
			}
		}
		prog = startProgress(stderr, tty, period, r.st, o.devices)
	}
	// Operations started in a phase may finish after it: they run under
	// opCtx, which only a signal ends; each is bounded by --timeout.
	opCtx := ctx

	// Registered before anything else: SIGUSR1 would otherwise end the
	// process.
	gate := newSignalGate(o.waitSignal)
	defer gate.stop()

	p0, _ := watch.sample()
	note("devsim: phase connect start: %d devices\n", o.devices)
	t0 := time.Now()
	r.connectAll(ctx)
	connectDur := time.Since(t0)
	p1, _ := watch.sample()
	connectOK := r.st.hsOK.Load()
	note("devsim: phase connect done: %d/%d devices up, %d handshakes failed, %.2fs\n",
		r.st.up.Load(), o.devices, r.st.hsFail.Load(), connectDur.Seconds())

	gate.wait(ctx, note, "warm-up")
	if o.warmup && ctx.Err() == nil {
		note("devsim: phase warmup start: %d devices\n", r.st.up.Load())
		n := r.wave(ctx, opCtx, opWarmup)
		note("devsim: phase warmup done: %d requests\n", n)
	}
	if o.settle > 0 {
		sleepUntil(ctx, time.Now().Add(o.settle))
	}
	p2, _ := watch.sample()
	sessionsAtRSS := r.st.up.Load()
	gate.wait(ctx, note, "steady phase")
	p2cpu, _ := watch.sample()
	hsBefore, opsBefore := r.st.hsOK.Load(), r.st.opsOK.Load()+r.st.opsFail.Load()

	t2 := time.Now()
	if o.duration > 0 && ctx.Err() == nil {
		note("devsim: phase steady start: %s\n", o.duration)
		sctx, cancel := context.WithTimeout(ctx, o.duration)
		done := make(chan struct{})
		var loops sync.WaitGroup
		if o.churn > 0 {
			loops.Go(func() { r.churn(sctx, opCtx) })
		}
		if o.rebootEvery > 0 {
			loops.Go(func() {
				r.lifecycleLoop(sctx, opCtx, 1/o.rebootEvery.Seconds(), func(ctx context.Context, c rebooter) error {
					return c.reboot(ctx, r.step)
				})
			})
		}
		if o.sleepRate > 0 {
			loops.Go(func() {
				r.lifecycleLoop(sctx, opCtx, o.sleepRate, func(ctx context.Context, c rebooter) error {
					return c.sleep(ctx, o.sleepFor, r.step)
				})
			})
		}
		go func() {
			defer close(done)
			loops.Wait()
		}()
		if o.msgMax || o.msgRate > 0 {
			r.messages(sctx, opCtx)
			if o.messages > 0 {
				cancel() // --messages reached: end the phase
			}
		}
		<-sctx.Done()
		cancel()
		<-done
		r.bg.Wait()
	}
	steadyDur := time.Since(t2)
	p3, ok3 := watch.sample()
	if o.duration > 0 {
		note("devsim: phase steady done: %.2fs\n", steadyDur.Seconds())
	}
	steadyOps := r.st.opsOK.Load() + r.st.opsFail.Load() - opsBefore
	steadyHS := r.st.hsOK.Load() - hsBefore

	var p4, p5 procSample
	var wakeOps int64
	ok5 := true
	if o.wakeAfter > 0 && ctx.Err() == nil {
		note("devsim: phase idle start: %s\n", o.wakeAfter)
		sleepUntil(ctx, time.Now().Add(o.wakeAfter))
		p4, _ = watch.sample()
		note("devsim: phase wake start: %d devices\n", r.st.up.Load())
		wakeOps = r.wave(ctx, opCtx, opWake)
		p5, ok5 = watch.sample()
		note("devsim: phase wake done: %d requests\n", wakeOps)
	}
	upAtEnd := r.st.up.Load()

	cctx, cancel := context.WithTimeout(context.Background(), o.timeout+5*time.Second)
	r.closeAll(cctx)
	cancel()
	if prog != nil {
		prog.end()
	}

	s := r.summarize(o, shared)
	s.UpAtEnd = upAtEnd
	s.Handshakes.ConnectPhaseS = round(connectDur.Seconds(), 3)
	s.Handshakes.ConnectOK = connectOK
	s.Handshakes.PerSecond = perSecond(connectOK, connectDur)
	s.Handshakes.DuringSteadyOK = steadyHS
	s.Requests.SteadyS = round(steadyDur.Seconds(), 3)
	s.Requests.SteadyDone = steadyOps
	s.Requests.PerSecond = perSecond(steadyOps, steadyDur)
	if o.serverPID != 0 {
		sv := &serverSummary{PID: o.serverPID}
		if watch.err != nil || !ok3 || !ok5 {
			sv.Error = fmt.Sprint("cannot read /proc: ", watch.err)
		} else {
			connectCPU, steadyCPU := cpuBetween(p0, p1), cpuBetween(p2cpu, p3)
			sv.ConnectCPUms = round(float64(connectCPU)/1e6, 1)
			sv.SteadyCPUms = round(float64(steadyCPU)/1e6, 1)
			if connectOK > 0 {
				sv.CPUPerHandshakeUS = round(float64(connectCPU)/1e3/float64(connectOK), 1)
			}
			if steadyOps > 0 {
				sv.CPUPerRequestUS = round(float64(steadyCPU)/1e3/float64(steadyOps), 2)
			}
			if wakeOps > 0 {
				wakeCPU := cpuBetween(p4, p5)
				sv.WakeCPUms = round(float64(wakeCPU)/1e6, 2)
				sv.CPUPerWakeUS = round(float64(wakeCPU)/1e3/float64(wakeOps), 2)
				sv.WakeRequests = wakeOps
			}
			sv.RSSBefore, sv.RSSConnected, sv.RSSAfter = p0.RSS, p2.RSS, p3.RSS
			sv.SessionsAtRSS = sessionsAtRSS
			if sessionsAtRSS > 0 {
				sv.RSSPerSession = round(float64(p2.RSS-p0.RSS)/float64(sessionsAtRSS), 0)
			}
			sv.ThreadsBefore, sv.ThreadsAfter = p0.Threads, p2.Threads
		}
		s.Server = sv
	}
	return s, nil
}

// summarize collects the counters into a summary.
func (r *runner) summarize(o *options, shared int) *summary {
	st := r.st
	s := &summary{
		Target: o.server, Mode: o.mode(), Devices: o.devices, Mix: o.mix.String(),
		Pattern: o.pattern.String(), Churn: o.churn, SharedKeys: shared,
		Reconnects: st.reconnects.Load(),
	}
	if o.noDTLS {
		s.Mix = ""
	}
	switch {
	case o.msgMax:
		s.MsgRate = "max"
	default:
		s.MsgRate = fmt.Sprint(o.msgRate)
	}
	s.Handshakes.OK, s.Handshakes.Failed, s.Handshakes.Retried = st.hsOK.Load(), st.hsFail.Load(), st.hsRetried.Load()
	s.Handshakes.SuccessRate = rate(s.Handshakes.OK, s.Handshakes.Failed)
	s.Handshakes.Latency = st.hsLat.snapshot()
	s.Requests.OK, s.Requests.Failed = st.opsOK.Load(), st.opsFail.Load()
	s.Requests.SuccessRate = rate(s.Requests.OK, s.Requests.Failed)
	s.Requests.Latency = st.reqLat.snapshot()
	s.Requests.Late, s.Requests.NoDevice = st.late.Load(), st.noDevice.Load()

	st.mu.Lock()
	defer st.mu.Unlock()
	s.Handshakes.ByProfile = make(map[string]*countPair, len(st.byProfile))
	for k, v := range st.byProfile {
		c := *v
		s.Handshakes.ByProfile[k] = &c
	}
	s.Requests.ByOp = make(map[string]opSummary, len(st.ops))
	for k, v := range st.ops {
		s.Requests.ByOp[k] = opSummary{OK: v.OK, Failed: v.Failed, Latency: v.lat.snapshot()}
	}
	s.Handshakes.ByKind = make(map[string]opSummary, len(st.byKind))
	for k, v := range st.byKind {
		s.Handshakes.ByKind[k] = opSummary{OK: v.OK, Failed: v.Failed, Latency: v.lat.snapshot()}
	}
	s.Errors = maps.Clone(st.errs)
	s.ErrorSamples = maps.Clone(st.samples)
	d := st.devices
	s.Lifecycle = lifecycleSummary{
		RebootEvery: o.rebootEvery.String(), RehandshakeIdle: o.rehandshakeIdle.String(), AutoReconnect: o.autoReconnect,
		Sleep: o.sleepFor.String(), SleepRate: o.sleepRate,
		Reboots: int64(d.Reboots), IdleRehandshakes: int64(d.IdleRehandshakes), Reconnects: int64(d.Reconnects),
		Sleeps: int64(d.Sleeps), SessionsLost: int64(d.SessionsLost), RefusedAfterHandshake: int64(d.Refused),
		LostWhileAsleep: d.LostWhileAsleep,
	}
	if o.loss != nil {
		l := st.loss
		s.Loss = &l
	}
	return s
}

// step times f and records it as one request of operation op.
func (r *runner) step(op string, f func() error) error {
	t := time.Now()
	err := f()
	r.st.op(op, time.Since(t), err)
	return err
}

// signalGate holds a run at --wait-signal's gates until SIGUSR1, so that a
// script driving several devsim processes (bench/runner) can measure the
// server between phases: every process's devices connected, nothing sent.
type signalGate struct{ ch chan os.Signal }

func newSignalGate(on bool) *signalGate {
	if !on {
		return &signalGate{}
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	return &signalGate{ch: ch}
}

// wait prints the gate's line and waits for SIGUSR1 or the end of ctx.
func (g *signalGate) wait(ctx context.Context, note func(string, ...any), next string) {
	if g.ch == nil || ctx.Err() != nil {
		return
	}
	note("devsim: phase wait start: SIGUSR1 to pid %d starts the %s\n", os.Getpid(), next)
	select {
	case <-g.ch:
	case <-ctx.Done():
	}
	note("devsim: phase wait done\n")
}

func (g *signalGate) stop() {
	if g.ch != nil {
		signal.Stop(g.ch)
	}
}
