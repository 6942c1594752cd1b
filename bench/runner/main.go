// Command runner runs the benchmarks of bench/run.sh: every comparison side
// by side in one run, each measured as CPU time of the server process per
// operation (devsim --server-pid reads the server's threads' run times from
// /proc at the edges of its phases) and memory per session, because
// wall-clock rates are noise on a small shared machine. It starts each
// server fresh for each measurement (the gateway binary on its lean data
// plane and on the pion plane, bench/pionecho, bench/floor, libcoap's
// coap-server-gnutls), drives it with cmd/devsim, prints one table and
// writes the report (--md).
//
//	runner --bin DIR --work DIR [--smoke|--quick] [--only STEPS] [--md FILE]
//
// DIR holds the binaries gateway, pionecho, floor and devsim (bench/run.sh
// builds them). --smoke runs every measurement at a tiny size and exits 0
// only if every step worked.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// sizes are the sizes of one run of the benchmarks.
type sizes struct {
	handshakes  int           // handshakes per mode, server and repetition
	reps        int           // repetitions of the CPU measurements, interleaved
	hsReps      int           // repetitions of the handshake measurements (short runs: more of them)
	fwdSessions int           // established sessions of the forwarding runs
	fwdMsgs     int           // requests per forwarding run
	fwdRate     float64       // requests per second in forwarding runs
	wakeAfter   time.Duration // idle time before the wake phase
	latSessions int
	latMsgs     int
	latRate     float64
	memSessions int
	settle      time.Duration
	fleet       int // LwM2M fleet run: devices
	fleetDur    time.Duration
	fleetRate   float64

	// The scale step: scaleSessions established at once from devsim
	// processes of at most scalePerProc devices (the open-file limit is
	// 20,000 per process here), scaleActive of them forwarding.
	scaleSessions int
	scaleActive   int
	scalePerProc  int
	scaleIdle     time.Duration // idle time before the settled sample
	scaleMsgs     int           // requests of its forwarding phase (and of the floor's and raw pion's)

	// CPU profiles (pprof, 100 samples per second of CPU): of a forwarding
	// run's steady phase; the handshake runs' are half as long. 0: none.
	profileSeconds int

	// The flood scenario (issue 12): spoofed ClientHellos per second for
	// floodDur, the gateway watched for floodAfter after; established
	// devices sending a request a second, returning and new devices
	// handshaking in a loop.
	floodRate                                    float64
	floodDur, floodAfter                         time.Duration
	floodEstablished, floodReturning, floodFresh int
}

// releaseIdle is the idle time after which the gateway drops an idle
// session's ciphers (gateway/plane_lean.go releaseAfter, 30 s) plus its
// sweeper's period (5 s with the default idle timeout) and a margin: the
// wake phase starts after it.
const releaseIdle = 40 * time.Second

// lateHandshakeKeep is how long the record layer keeps a new session's
// late-handshake state (internal/record hsKeep, 2 minutes) plus a margin:
// the settled sample of the scale step waits that long after the
// handshakes.
const lateHandshakeKeep = 150 * time.Second

var (
	fullSizes = sizes{
		handshakes: 3000, reps: 2, hsReps: 5,
		fwdSessions: 1000, fwdMsgs: 20000, fwdRate: 2500, wakeAfter: releaseIdle,
		latSessions: 100, latMsgs: 3200, latRate: 400,
		memSessions: 10000, settle: 5 * time.Second,
		fleet: 1000, fleetDur: 15 * time.Second, fleetRate: 300,
		scaleSessions: 100000, scaleActive: 15000, scalePerProc: 16000, scaleIdle: lateHandshakeKeep, scaleMsgs: 60000,
		profileSeconds: 20,
		floodRate:      10000, floodDur: 30 * time.Second, floodAfter: 60 * time.Second,
		floodEstablished: 1000, floodReturning: 20, floodFresh: 20,
	}
	// quickSizes: indicative numbers in about ten minutes (runner --quick).
	quickSizes = sizes{
		handshakes: 1000, reps: 1, hsReps: 1,
		fwdSessions: 1000, fwdMsgs: 8000, fwdRate: 2500, wakeAfter: releaseIdle,
		latSessions: 100, latMsgs: 1200, latRate: 400,
		memSessions: 2000, settle: 2 * time.Second,
		fleet: 300, fleetDur: 5 * time.Second, fleetRate: 200,
		scaleSessions: 20000, scaleActive: 5000, scalePerProc: 16000, scaleIdle: 30 * time.Second, scaleMsgs: 20000,
		profileSeconds: 6,
		floodRate:      10000, floodDur: 10 * time.Second, floodAfter: 30 * time.Second,
		floodEstablished: 300, floodReturning: 10, floodFresh: 10,
	}
	smokeSizes = sizes{
		handshakes: 20, reps: 1, hsReps: 1,
		fwdSessions: 20, fwdMsgs: 200, fwdRate: 1000, wakeAfter: 500 * time.Millisecond,
		latSessions: 10, latMsgs: 50, latRate: 200,
		memSessions: 50, settle: 300 * time.Millisecond,
		fleet: 20, fleetDur: time.Second, fleetRate: 50,
		scaleSessions: 60, scaleActive: 20, scalePerProc: 20, scaleIdle: 300 * time.Millisecond, scaleMsgs: 200,
		// Long enough for samples: the gateway forwards 1,000 requests a
		// second at a few percent of a core, about 4 samples a second.
		profileSeconds: 3,
		floodRate:      300, floodDur: 3 * time.Second, floodAfter: 5 * time.Second,
		floodEstablished: 20, floodReturning: 2, floodFresh: 2,
	}
)

// stepNames are the steps of a run, in order.
var stepNames = []string{"handshakes", "forwarding", "latency", "memory", "fleet", "scale", "profile", "flood"}

// env is one run of the benchmarks.
type env struct {
	bin, work string
	libcoap   string // path of coap-server-gnutls, "" if missing
	smoke     bool
	sz        sizes
	log       io.Writer
	results   []*result
	floods    []*floodRun
	nextID    int // of the next devsim run
	failed    []string
	keys      map[string]string // generated key files by size and mix
	started   time.Time
	commit    string
	loadStart string
	adminOnce sync.Once
	admin     bool // the gateway config has an admin listener with pprof
	scale     *scaleReport
	profiles  []profileReport
}

func main() {
	bin := flag.String("bin", "", "directory with the gateway, pionecho, floor and devsim binaries")
	work := flag.String("work", "", "scratch directory (key files, configs, logs, profiles)")
	smoke := flag.Bool("smoke", false, "every measurement at a tiny size; exit 0 only if every step worked")
	quick := flag.Bool("quick", false, "medium sizes: indicative numbers in about ten minutes")
	md := flag.String("md", "", "write the report to this file")
	commit := flag.String("commit", "", "version of the code measured, for the report")
	only := flag.String("only", "", "run only these steps, comma-separated: "+strings.Join(stepNames, ","))
	flag.Parse()
	if *bin == "" || *work == "" {
		fmt.Fprintln(os.Stderr, "usage: runner --bin DIR --work DIR [--smoke|--quick] [--md FILE]")
		os.Exit(2)
	}
	e := &env{bin: *bin, work: *work, smoke: *smoke, sz: fullSizes, log: os.Stderr,
		keys: map[string]string{}, started: time.Now(), commit: *commit, loadStart: loadAvg()}
	switch {
	case *smoke:
		e.sz = smokeSizes
	case *quick:
		e.sz = quickSizes
	}
	if p, err := exec.LookPath("coap-server-gnutls"); err == nil {
		e.libcoap = p
	}
	steps := map[string]func(){"handshakes": e.handshakes, "forwarding": e.forwarding, "latency": e.latency,
		"memory": e.memory, "fleet": e.fleet, "scale": e.scaleStep, "profile": e.profile, "flood": e.flood}
	run := stepNames
	if *only != "" {
		run = strings.Split(*only, ",")
		for _, name := range run {
			if steps[name] == nil {
				fmt.Fprintf(os.Stderr, "runner: --only: no step %q (steps: %s)\n", name, strings.Join(stepNames, ","))
				os.Exit(2)
			}
		}
	}
	e.logf("load average at start: %s", e.loadStart)
	for _, name := range run {
		steps[name]()
	}
	t := e.table()
	fmt.Println()
	t.writeText(os.Stdout)
	elapsed := time.Since(e.started).Round(time.Second)
	if *md != "" {
		if err := os.WriteFile(*md, []byte(e.markdown(t, elapsed)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "runner:", err)
			os.Exit(1)
		}
		fmt.Printf("\nreport written to %s\n", *md)
	}
	fmt.Printf("\n%d measurements in %s (load average at end %s); %d failed\n", len(e.results)+len(e.floods), elapsed, loadAvg(), len(e.failed))
	if len(e.failed) > 0 {
		for _, f := range e.failed {
			fmt.Fprintln(os.Stderr, "FAILED:", f)
		}
		os.Exit(1)
	}
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "[%5.0fs] "+format+"\n", append([]any{time.Since(e.started).Seconds()}, args...)...)
}

func (e *env) fail(step string, err error) {
	e.failed = append(e.failed, fmt.Sprintf("%s: %v", step, err))
	e.logf("FAIL %s: %v", step, err)
}

// keyFile returns a generated key file of n keys for mix, made once.
func (e *env) keyFile(n int, mix string) (string, error) {
	id := fmt.Sprintf("%d-%s", n, mix)
	if p, ok := e.keys[id]; ok {
		return p, nil
	}
	p := filepath.Join(e.work, "keys-"+sanitize(id)+".yaml")
	out, err := exec.Command(filepath.Join(e.bin, "devsim"), "--gen-keys", fmt.Sprint(n), "--mix", mix, "--out", p).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gen-keys: %v: %s", err, out)
	}
	e.keys[id] = p
	return p, nil
}

// tags say what a measurement is, for the table, and hook into its phases.
type tags struct {
	group    string // handshake, forwarding, latency, memory, fleet, scale, profile
	mode     string // devsim profile, e.g. 1.3-dhe
	sessions int
	rep      int
	// onLine is called with every line devsim writes on stderr, with the
	// server and the result's extra values; phase markers are
	// "devsim: phase connect done", "devsim: phase steady start".
	onLine func(line string, srv *server, extra map[string]string)
	// before, when set, runs after devsim ended and before the server is
	// stopped (a profile being fetched is waited for).
	before func(srv *server, extra map[string]string)
	// prepare, when set, runs once the server is up, before devsim starts.
	prepare func(srv *server)
}

// measure starts a server of kind, runs l against it with --server and
// --server-pid added (and --keys, or --no-dtls for the floor), stops the
// server, checks and records the result. keys is the key file devsim
// reads and, except for libcoap, the server's; libcoap gets the shared
// text key libcoapKey.
func (e *env) measure(kind string, l load, keys, libcoapKey string, wantHS, wantReq int64, t tags) *result {
	backendPort, err := freePort()
	if err != nil {
		e.fail(l.name, err)
		return nil
	}
	serverKeys := keys
	if kind == kindLibcoap {
		if e.libcoap == "" {
			e.fail(l.name, fmt.Errorf("coap-server-gnutls not installed (apt-get install -y libcoap3-bin)"))
			return nil
		}
		serverKeys = libcoapKey
	}
	srv, err := e.startServer(kind, serverKeys, backendPort, sanitize(l.name))
	if err != nil {
		e.fail(l.name, err)
		return nil
	}
	if t.prepare != nil {
		t.prepare(srv)
	}
	l.args = append(l.args, "--server", srv.addr, "--server-pid", fmt.Sprint(srv.pid()))
	if kind == kindFloor {
		l.args = append(l.args, "--no-dtls")
	} else {
		l.args = append(l.args, "--keys", keys)
	}
	if forwards(kind) {
		l.args = append(l.args, "--backend", fmt.Sprintf("127.0.0.1:%d", backendPort))
	}
	extra := map[string]string{}
	if t.onLine != nil {
		l.onLine = func(line string) { t.onLine(line, srv, extra) }
	}
	res := e.runLoad(l)
	if t.before != nil {
		t.before(srv, extra)
	}
	srv.stop()
	res.server, res.group, res.mode, res.sessions, res.rep = kind, t.group, t.mode, t.sessions, t.rep
	for k, v := range extra {
		res.extra[k] = v
	}
	if err := res.check(wantHS, wantReq); err != nil {
		e.fail(l.name, err)
		res.err = err
	}
	e.results = append(e.results, res)
	return res
}
