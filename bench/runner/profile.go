package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// profileReport is one profile summarised for the report.
type profileReport struct {
	title    string
	path     string
	top      string // go tool pprof -top, trimmed
	own      string // the gateway's own functions (and gob) by cumulative time
	buckets  string // CPU by kind of work, one line
	err      error
	resultID int
	gateway  bool // a profile of the gateway: also list its own functions
}

// profile: CPU profiles (pprof) of the gateway's lean plane and of raw
// pion during the connect phase of a DTLS 1.3 handshake run and the steady
// phase of a forwarding run; separate runs, not counted in the figures
// (profiling costs a little). The scale step profiles its own forwarding
// and wake phases; its heap profiles come from its samples.
func (e *env) profile() {
	secs := e.sz.profileSeconds
	if secs <= 0 {
		return
	}
	s := e.sz.fwdSessions
	fwdKeys, err := e.keyFile(s, "1.3-dhe")
	if err != nil {
		e.fail("profile keys", err)
		return
	}
	// The steady phase outlasts the profile (by half a second in the smoke
	// run, by half the profile in the others). The smoke run forwards at
	// 5,000 requests a second: at its usual rate the gateway uses a few
	// percent of a core and a 3-second profile can hold no sample (CI
	// failed on that twice).
	rate := e.sz.fwdRate
	msgs := int(rate * (float64(secs) * 1.5))
	if e.smoke {
		rate = 5000
		msgs = int(rate * (float64(secs) + 0.5))
	}
	for _, kind := range []string{kindGateway, kindPion} {
		if e.smoke && kind != kindGateway {
			continue // the smoke run covers the profile path once
		}
		if !e.smoke {
			// Enough handshakes to outlast the profile at 800 per
			// second: the close phase (close_notify) stays out of it.
			hsSecs := max(1, secs/2)
			n := max(e.sz.handshakes, hsSecs*800)
			hsKeys, err := e.keyFile(n, "1.3-dhe")
			if err != nil {
				e.fail("profile keys", err)
				return
			}
			hs := load{name: "profile handshakes " + kind, args: []string{"--raw", "--devices", fmt.Sprint(n), "--mix", "1.3-dhe",
				"--duration", "0", "--concurrency", "16", "--source-ips", sourceIPs}}
			e.cpuProfile(kind, hs, hsKeys, "devsim: phase connect start", hsSecs, int64(n), 0,
				tags{group: "profile", mode: "handshake 1.3-dhe", sessions: n})
		}
		fwd := load{name: "profile forwarding " + kind, args: e.forwardArgsAt(s, msgs, rate)}
		e.cpuProfile(kind, fwd, fwdKeys, "devsim: phase steady start", secs, int64(s), int64(msgs),
			tags{group: "profile", mode: "forwarding", sessions: s})
	}
}

// profiler fetches CPU profiles from a server when devsim prints given
// phase lines; wait waits for the fetches.
type profiler struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	taken map[string]*profileReport // by marker
}

// onLine starts fetching a profile of secs seconds into path when line
// starts with marker (once per marker).
func (p *profiler) onLine(line, marker, base string, secs int, path string, rep *profileReport) {
	if !strings.HasPrefix(line, marker) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.taken == nil {
		p.taken = map[string]*profileReport{}
	}
	if p.taken[marker] != nil {
		return
	}
	p.taken[marker] = rep
	rep.path = path
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		rep.err = fetch(fmt.Sprintf("%s/profile?seconds=%d", base, secs), path)
	}()
}

// summarise waits for the fetches and summarises each profile taken; a
// marker never seen is an error of its report.
func (p *profiler) summarise(reps ...*profileReport) {
	p.wg.Wait()
	for _, r := range reps {
		if r.path == "" {
			r.err = fmt.Errorf("not taken: its phase did not start")
			continue
		}
		if r.err == nil {
			r.top, r.err = pprofTop(r.path, "-nodecount=25")
		}
		if r.err == nil && r.gateway {
			r.own, r.err = pprofTop(r.path, "-cum", "-show=lwm2m-gateway|encoding/gob|go.uber.org/zap", "-nodecount=25")
		}
		if r.err == nil {
			r.buckets, r.err = cpuBuckets(r.path)
		}
	}
}

// cpuProfile measures l against a server of kind while fetching a CPU
// profile of secs seconds from its pprof endpoint, starting at the devsim
// line starting with marker.
func (e *env) cpuProfile(kind string, l load, keys, marker string, secs int, wantHS, wantReq int64, t tags) {
	path := filepath.Join(e.work, sanitize(l.name)+".cpu.pb.gz")
	var pr profiler
	rep := &profileReport{title: fmt.Sprintf("%s, %s (%d sessions), CPU", kind, t.mode, t.sessions), gateway: kind == kindGateway}
	t.onLine = func(line string, srv *server, _ map[string]string) {
		pr.onLine(line, marker, srv.pprof, secs, path, rep)
	}
	t.before = func(*server, map[string]string) { pr.wg.Wait() }
	res := e.measure(kind, l, keys, "", wantHS, wantReq, t)
	if res == nil {
		return
	}
	rep.resultID = res.id
	pr.summarise(rep)
	if rep.err != nil {
		e.fail(l.name+" profile", rep.err)
	}
	e.profiles = append(e.profiles, *rep)
}

// heapProfiles summarises the scale step's heap profiles: every session
// idle, and what the forwarding sessions added.
func (e *env) heapProfiles() {
	r := e.scale
	if r == nil || r.idle.heapProfile == "" || r.fwd.heapProfile == "" {
		return
	}
	p := profileReport{title: fmt.Sprintf("gateway, %d idle DTLS 1.3 sessions, heap in use after GC", int(r.idle.established)), path: r.idle.heapProfile}
	p.top, p.err = pprofTop(r.idle.heapProfile, "-sample_index=inuse_space", "-nodecount=20")
	e.profiles = append(e.profiles, p)
	d := profileReport{title: fmt.Sprintf("gateway, what %d sessions' first forwarded request added to the heap", r.active), path: r.fwd.heapProfile}
	d.top, d.err = pprofTop(r.fwd.heapProfile, "-sample_index=inuse_space", "-nodecount=15", "-diff_base="+r.idle.heapProfile)
	e.profiles = append(e.profiles, d)
}

// pprofTop is go tool pprof -top of a profile, without its preamble
// lines about the binary.
func pprofTop(path string, args ...string) (string, error) {
	out, err := exec.Command("go", append(append([]string{"tool", "pprof", "-top"}, args...), path)...).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof %s: %w", path, err)
	}
	var keep []string
	for line := range strings.SplitSeq(strings.TrimRight(string(out), "\n"), "\n") {
		if strings.HasPrefix(line, "File: ") || strings.HasPrefix(line, "Build ID: ") || strings.HasPrefix(line, "Time: ") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n"), nil
}

// bucketOf sorts a function into the kind of work the report splits CPU
// time by. Time the kernel spends in a system call is sampled in the Go
// function that made it, so "system calls" includes the kernel's work.
func bucketOf(fn string) string {
	has := func(prefixes ...string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(fn, p) {
				return true
			}
		}
		return false
	}
	switch {
	case has("syscall.", "internal/runtime/syscall", "golang.org/x/sys/unix.", "runtime.futex", "runtime.epollwait",
		"runtime.netpoll", "runtime.usleep", "runtime.write1", "runtime.read", "runtime.nanotime", "runtime.walltime",
		"runtime.osyield", "runtime.madvise", "runtime.mmap", "runtime.sysMmap", "runtime.tgkill", "runtime.rtsigprocmask",
		"runtime.sigprocmask", "runtime.timer_settime", "runtime.vgetrandom", "internal/poll."):
		return "system calls"
	case has("crypto/", "golang.org/x/crypto/", "vendor/golang.org/x/crypto/", "github.com/pion/dtls/v4/pkg/crypto/"):
		return "crypto"
	case has("internal/runtime/gc/", "runtime.gc", "runtime.scan", "runtime.mark", "runtime.greyobject", "runtime.findObject", "runtime.heapBits",
		"runtime.sweep", "runtime.bgsweep", "runtime.bgscavenge", "runtime.(*gcWork)", "runtime.(*gcBits)", "runtime.wbBuf",
		"runtime.tryDeferToSpanScan", "runtime.typePointers", "runtime.(*mspan)", "runtime.(*mheap)", "runtime.(*mcache)",
		"runtime.(*mcentral)", "runtime.(*pageAlloc)", "runtime.(*scavenger", "runtime.mallocgc", "runtime.memclr",
		"runtime.newobject", "runtime.makeslice", "runtime.growslice", "runtime.(*spanSet)", "runtime.(*gcControllerState)",
		"runtime.spanOf", "runtime.nextFreeFast", "runtime.heapSetType", "runtime.bulkBarrierPreWrite", "runtime.(*limiterEvent)",
		"runtime.deductAssistCredit", "runtime.(*spanInlineMarkBits)", "runtime.scanobject"):
		return "GC and allocation"
	case has("runtime.schedule", "runtime.findRunnable", "runtime.park_m", "runtime.mcall", "runtime.gopark", "runtime.goready",
		"runtime.ready", "runtime.runq", "runtime.stealWork", "runtime.checkTimers", "runtime.casgstatus", "runtime.execute",
		"runtime.lock", "runtime.unlock", "runtime.notesleep", "runtime.notewakeup", "runtime.wakep", "runtime.startm",
		"runtime.stopm", "runtime.selectgo", "runtime.chansend", "runtime.chanrecv", "runtime.resetspinning", "runtime.goexit",
		"runtime.newproc", "runtime.gogo", "runtime.(*timer", "runtime.(*timers)", "runtime.entersyscall", "runtime.exitsyscall",
		"runtime.reentersyscall", "runtime.mPark", "runtime.handoffp", "runtime.acquirep", "runtime.releasep", "runtime.sysmon",
		"runtime.pidle", "runtime.globrunq", "runtime.netpollblock", "runtime.(*waitq)", "runtime.semacquire", "runtime.semrelease",
		"runtime.procyield", "sync.", "internal/sync."):
		return "scheduler and locks"
	case has("encoding/gob."):
		return "encoding/gob (pion's state export)"
	case has("github.com/lwm2m-gateway/gateway/"):
		return "gateway code"
	case has("github.com/pion/"):
		return "pion (other than crypto)"
	case has("runtime.", "internal/runtime/", "aeshashbody", "memeqbody", "indexbytebody", "cmpbody", "gcWriteBarrier"):
		return "other runtime"
	}
	return "other"
}

// cpuBuckets sums a CPU profile's flat time by bucketOf.
func cpuBuckets(path string) (string, error) {
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=1000000", "-nodefraction=0", path).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof %s: %w", path, err)
	}
	sums := map[string]float64{}
	total := 0.0
	inTable := false
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && f[0] == "flat" {
			inTable = true
			continue
		}
		if !inTable || len(f) < 6 {
			continue
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[1], "%"), 64)
		if err != nil {
			continue
		}
		fn := strings.Join(f[5:], " ")
		sums[bucketOf(fn)] += pct
		total += pct
	}
	if total == 0 {
		return "", fmt.Errorf("%s: no samples", path)
	}
	names := make([]string, 0, len(sums))
	for k := range sums {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int {
		switch {
		case sums[a] > sums[b]:
			return -1
		case sums[a] < sums[b]:
			return 1
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %.0f%%", n, sums[n])
	}
	return strings.Join(parts, ", "), nil
}
