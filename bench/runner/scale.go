package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// scaleReport is what the scale step measured on one gateway.
type scaleReport struct {
	sessions, active int      // held in all, of which forwarding (counts)
	procs            int      // devsim processes
	base             gwSample // before any session
	fresh            gwSample // every session up, right after the handshakes
	idle             gwSample // after scaleIdle more (late-handshake state gone, ciphers released)
	fwd              gwSample // after the active devices' first request (upstream sockets open)
	activeRun        *result  // the forwarding devsim run (CPU per request, wake)
	holders          []*result
	failedHS         int64 // handshakes that failed in the connect phases
	retriedHS        int64 // failed handshakes the device tried again (--connect-retries)
	err              error
}

// scaleStep: scaleSessions established DTLS 1.3 sessions on one gateway
// (the lean plane, defaults), the devices in devsim processes of at most
// scalePerProc each over 256 loopback source addresses (the open-file limit
// is 20,000 per process here). All but scaleActive devices are held
// (--hold: handshake, then only their socket); the scaleActive devices of
// one more process wait at --wait-signal gates. The runner samples the
// gateway with every session idle, again after scaleIdle, lets the active
// devices send one request each (each session opens its upstream socket)
// and samples again, then lets them forward at the fixed rate of the
// forwarding runs, idle past the cipher release and wake: CPU per request
// at this many sessions. Then the floor and raw pion forward the same
// traffic for scaleActive devices (raw pion with all scaleSessions would
// take about 10 GB: about 100 KB and 4 goroutines per pion session).
func (e *env) scaleStep() {
	n, active, per := e.sz.scaleSessions, e.sz.scaleActive, e.sz.scalePerProc
	rep := &scaleReport{sessions: n, active: active}
	e.scale = rep
	rep.err = e.scaleGateway(rep, n, active, per)
	if rep.err != nil {
		e.fail("scale", rep.err)
	} else {
		e.heapProfiles()
	}
	keys, err := e.scaleKeys(n)
	if err != nil {
		e.fail("scale keys", err)
		return
	}
	for _, kind := range []string{kindFloor, kindPion} {
		args := append(e.forwardArgs(active, e.sz.scaleMsgs), "--source-port-base", devicePortBase)
		e.measure(kind, load{name: fmt.Sprintf("scale forward %d sessions %s", active, kind), args: args, timeout: e.connectBound(active)},
			keys, "", int64(active), int64(e.sz.scaleMsgs), tags{group: "scale", mode: "1.3-dhe", sessions: active})
	}
}

// devicePortBase is the first port the scale step's devices bind (devsim
// --source-port-base; ports 20000..20390 over 256 addresses for 100,000
// devices), below the ephemeral range. A socket connected without a bind,
// as the gateway's and the floor's upstream sockets are, takes a port no
// other socket uses on any address: 100,000 devices on ephemeral ports
// would leave the gateway none (connect fails with EAGAIN).
const devicePortBase = "20000"

// connectBound bounds a run that handshakes n devices (at 100 per second
// at worst on a loaded machine) and then forwards.
func (e *env) connectBound(n int) time.Duration {
	return time.Duration(n/100)*time.Second + 5*time.Minute
}

func (e *env) scaleGateway(rep *scaleReport, n, active, per int) error {
	keys, err := e.scaleKeys(n)
	if err != nil {
		return err
	}
	backendPort, err := freePort()
	if err != nil {
		return err
	}
	srv, err := e.startServer(kindGateway, keys, backendPort, "scale")
	if err != nil {
		return err
	}
	defer srv.stop()
	dir := filepath.Join(e.work, "scale")
	sample := func(name string) (gwSample, error) {
		s, err := sampleGateway(srv, filepath.Join(dir, name+".heap.pb.gz"))
		if err == nil {
			e.logf("scale %-6s %6.0f sessions: heap %.1f MB, RSS %.1f MB, %0.f goroutines, %.0f threads, %.0f fds, UDP sockets %d",
				name, s.established, s.heap/(1<<20), float64(s.rss)/(1<<20), s.goroutines, s.threads, s.openFDs, s.udpInUse)
		}
		return s, err
	}
	// The key store's loading leaves garbage the runtime returns to the
	// system over a few seconds: the baseline waits for RSS to settle.
	if _, err := sampleGateway(srv, filepath.Join(dir, "start.heap.pb.gz")); err != nil {
		return err
	}
	if !e.smoke { // five seconds at least
		waitRSSSettled(srv.pid(), 90*time.Second)
	}
	if rep.base, err = sample("base"); err != nil {
		return err
	}

	bound := e.connectBound(n)
	common := []string{"--raw", "--mix", "1.3-dhe", "--concurrency", "16", "--source-ips", sourceIPs, "--source-port-base", devicePortBase,
		"--timeout", "30s", "--connect-retries", "1", "--server", srv.addr, "--keys", keys}
	var holders []*running
	defer func() { // on any error: end every devsim still running
		for _, h := range holders {
			_ = h.signal(os.Interrupt)
			h.wait()
		}
	}()
	for off := active; off < n; off += per {
		count := min(per, n-off)
		args := append(append([]string{}, common...), "--hold", "--devices", fmt.Sprint(count), "--key-offset", fmt.Sprint(off),
			"--msg-rate", "0", "--duration", "1h")
		holders = append(holders, e.startLoad(load{name: fmt.Sprintf("scale hold %d+%d", off, count), args: args, timeout: bound + time.Hour}))
	}
	fwdBound := time.Duration(float64(e.sz.scaleMsgs)/e.sz.fwdRate*float64(time.Second)) + time.Minute
	args := append(append([]string{}, common...), "--devices", fmt.Sprint(active), "--key-offset", "0",
		"--wait-signal", "--warmup", "--settle", e.sz.settle.String(), "--msg-rate", fmt.Sprint(e.sz.fwdRate), "--messages", fmt.Sprint(e.sz.scaleMsgs),
		"--duration", fwdBound.String(), "--size", "100", "--inflight", "64", "--wake-after", e.sz.wakeAfter.String(),
		"--server-pid", fmt.Sprint(srv.pid()), "--backend", fmt.Sprintf("127.0.0.1:%d", backendPort))
	// CPU profiles of the forwarding and wake phases, each a second
	// shorter than its phase (none if that is under a second).
	var prof profiler
	steadyProf := &profileReport{title: fmt.Sprintf("gateway, forwarding at %d sessions (%d forwarding), CPU", n, active), gateway: true}
	wakeProf := &profileReport{title: fmt.Sprintf("gateway, first request of %d sessions after %s idle (wake), CPU", active, e.sz.wakeAfter), gateway: true}
	steadySecs := min(e.sz.profileSeconds, int(float64(e.sz.scaleMsgs)/e.sz.fwdRate)-1)
	wakeSecs := min(e.sz.profileSeconds, int(float64(active)/e.sz.fwdRate)-1)
	onLine := func(line string) {
		if steadySecs >= 1 {
			prof.onLine(line, "devsim: phase steady start", srv.pprof, steadySecs, filepath.Join(dir, "steady.cpu.pb.gz"), steadyProf)
		}
		if wakeSecs >= 1 {
			prof.onLine(line, "devsim: phase wake start", srv.pprof, wakeSecs, filepath.Join(dir, "wake.cpu.pb.gz"), wakeProf)
		}
	}
	act := e.startLoad(load{name: fmt.Sprintf("scale forward %d of %d sessions gateway", active, n), args: args, onLine: onLine,
		timeout: bound + e.sz.scaleIdle + e.sz.wakeAfter + fwdBound + 5*time.Minute})
	rep.procs = len(holders) + 1
	finish := func(err error) error {
		_ = act.signal(os.Interrupt)
		rep.activeRun = e.record(act.wait(), kindGateway, n)
		return err
	}

	for _, h := range holders {
		if err := h.waitPhase("devsim: phase connect done", 1, bound); err != nil {
			return finish(err)
		}
	}
	if err := act.waitPhase("devsim: phase wait start", 1, bound); err != nil {
		return finish(err)
	}
	if rep.fresh, err = sample("fresh"); err != nil {
		return finish(err)
	}
	if rep.fresh.established < 0.99*float64(n) {
		return finish(fmt.Errorf("only %.0f of %d sessions established", rep.fresh.established, n))
	}
	e.logf("scale: every session idle; waiting %s (late-handshake state, cipher release)", e.sz.scaleIdle)
	time.Sleep(e.sz.scaleIdle)
	if rep.idle, err = sample("idle"); err != nil {
		return finish(err)
	}
	if err := act.signal(syscall.SIGUSR1); err != nil {
		return finish(err)
	}
	if err := act.waitPhase("devsim: phase wait start", 2, 10*time.Minute); err != nil {
		return finish(err)
	}
	if rep.fwd, err = sample("fwd"); err != nil {
		return finish(err)
	}
	if err := act.signal(syscall.SIGUSR1); err != nil {
		return finish(err)
	}
	rep.activeRun = e.record(act.wait(), kindGateway, n)
	var taken []*profileReport
	if steadySecs >= 1 {
		taken = append(taken, steadyProf)
	}
	if wakeSecs >= 1 {
		taken = append(taken, wakeProf)
	}
	prof.summarise(taken...)
	for _, p := range taken {
		p.resultID = rep.activeRun.id
		e.profiles = append(e.profiles, *p)
		if p.err != nil {
			e.fail(p.title, p.err)
		}
	}
	if err := rep.activeRun.check(int64(active), int64(e.sz.scaleMsgs)); err != nil {
		rep.activeRun.err = err
		return err
	}
	for _, h := range holders {
		_ = h.signal(os.Interrupt)
	}
	var errs []error
	for _, h := range holders {
		r := e.record(h.wait(), kindGateway, n)
		rep.holders = append(rep.holders, r)
		if r.sum != nil {
			rep.failedHS += r.sum.Handshakes.Failed
			rep.retriedHS += r.sum.Handshakes.Retried
		} else {
			errs = append(errs, r.err)
		}
	}
	holders = nil
	if rep.activeRun.sum != nil {
		rep.failedHS += rep.activeRun.sum.Handshakes.Failed
		rep.retriedHS += rep.activeRun.sum.Handshakes.Retried
	}
	return errors.Join(errs...)
}

// record files a result of the scale step.
func (e *env) record(r *result, kind string, sessions int) *result {
	r.server, r.group, r.mode, r.sessions = kind, "scale", "1.3-dhe", sessions
	e.results = append(e.results, r)
	return r
}

// scaleKeys writes, once, a key file of n DTLS 1.3 psk_dhe_ke identities
// in the compact form the file store reads (identity and key only; the
// defaults allow both versions and psk_dhe_ke): the form devsim --gen-keys
// writes (pskstore/file's Save, every field) takes about 210 bytes per key,
// over the store's 16 MiB limit (pskstore/file MaxFileSize) past about
// 79,000 keys. 32 random bytes per key, as the gateway's tools generate.
func (e *env) scaleKeys(n int) (string, error) {
	id := fmt.Sprintf("compact-%d", n)
	if p, ok := e.keys[id]; ok {
		return p, nil
	}
	var b strings.Builder
	b.Grow(n * 100)
	b.WriteString("# PSK store (pskstore/file), written by bench/runner for the scale step.\nkeys:\n")
	key := make([]byte, 32)
	for i := 1; i <= n; i++ {
		if _, err := rand.Read(key); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "  - {identity: \"load%06d\", key_hex: \"%s\"}\n", i, hex.EncodeToString(key))
	}
	p := filepath.Join(e.work, "keys-"+id+".yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		return "", err
	}
	e.keys[id] = p
	return p, nil
}

// waitRSSSettled polls pid's RSS each second until it has changed by less
// than 1% over five seconds, or limit passed.
func waitRSSSettled(pid int, limit time.Duration) {
	var last []int64
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		rss, err := procRSS(pid)
		if err != nil {
			return
		}
		last = append(last, rss)
		if len(last) > 5 {
			last = last[1:]
			lo, hi := slices.Min(last), slices.Max(last)
			if float64(hi-lo) < 0.01*float64(hi) {
				return
			}
		}
		time.Sleep(time.Second)
	}
}
