// Command runner runs the benchmarks of bench/run.sh: every comparison side
// by side in one run, each measured as CPU time of the server process per
// operation (utime+stime from /proc/PID/stat, read by devsim --server-pid
// at the edges of its phases) and RSS per idle session, because wall-clock
// rates are noise on a small shared machine. It starts each server fresh
// for each measurement (the gateway binary, bench/pionecho, libcoap's
// coap-server-gnutls), drives it with cmd/devsim, prints one table and
// writes the report (--md).
//
//	runner --bin DIR --work DIR [--smoke|--quick] [--only STEPS] [--md FILE]
//
// DIR holds the binaries gateway, pionecho and devsim (bench/run.sh builds
// them). --smoke runs every measurement at a tiny size and exits 0 only if
// every step worked.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// sizes are the sizes of one run of the benchmarks.
type sizes struct {
	handshakes  int     // handshakes per mode, server and repetition
	reps        int     // repetitions of the CPU measurements, interleaved
	fwdSessions []int   // established sessions of the forwarding runs
	fwdMsgs     int     // requests per forwarding run
	fwdRate     float64 // requests per second in forwarding runs
	latSessions int
	latMsgs     int
	latRate     float64
	memSessions int
	settle      time.Duration
	fleet       int // LwM2M fleet run: devices
	fleetDur    time.Duration
	fleetRate   float64
	perfSeconds int // 0: no profile
	// The flood scenario (issue 12): spoofed ClientHellos per second for
	// floodDur, the gateway watched for floodAfter after; established
	// devices sending a request a second, returning and new devices
	// handshaking in a loop.
	floodRate                                    float64
	floodDur, floodAfter                         time.Duration
	floodEstablished, floodReturning, floodFresh int
}

var (
	fullSizes = sizes{
		handshakes: 3000, reps: 2,
		fwdSessions: []int{100, 1000}, fwdMsgs: 20000, fwdRate: 2500,
		latSessions: 100, latMsgs: 3200, latRate: 400,
		memSessions: 10000, settle: 5 * time.Second,
		fleet: 1000, fleetDur: 15 * time.Second, fleetRate: 300,
		perfSeconds: 6,
		floodRate:   10000, floodDur: 30 * time.Second, floodAfter: 60 * time.Second,
		floodEstablished: 1000, floodReturning: 20, floodFresh: 20,
	}
	// quickSizes: indicative numbers in about two minutes (runner --quick).
	quickSizes = sizes{
		handshakes: 1000, reps: 1,
		fwdSessions: []int{100, 1000}, fwdMsgs: 8000, fwdRate: 2500,
		latSessions: 100, latMsgs: 1200, latRate: 400,
		memSessions: 2000, settle: 2 * time.Second,
		fleet: 300, fleetDur: 5 * time.Second, fleetRate: 200,
		perfSeconds: 3,
		floodRate:   10000, floodDur: 10 * time.Second, floodAfter: 30 * time.Second,
		floodEstablished: 300, floodReturning: 10, floodFresh: 10,
	}
	smokeSizes = sizes{
		handshakes: 20, reps: 1,
		fwdSessions: []int{10, 20}, fwdMsgs: 200, fwdRate: 1000,
		latSessions: 10, latMsgs: 100, latRate: 200,
		memSessions: 50, settle: 300 * time.Millisecond,
		fleet: 20, fleetDur: 2 * time.Second, fleetRate: 50,
		floodRate: 300, floodDur: 3 * time.Second, floodAfter: 5 * time.Second,
		floodEstablished: 20, floodReturning: 2, floodFresh: 2,
	}
)

// env is one run of the benchmarks.
type env struct {
	bin, work string
	libcoap   string // path of coap-server-gnutls, "" if missing
	smoke     bool
	sz        sizes
	log       io.Writer
	results   []*result
	floods    []*floodRun
	failed    []string
	keys      map[string]string // generated key files by size and mix
	started   time.Time
	commit    string
	loadStart string
	adminOnce sync.Once
	admin     bool // the gateway config has an admin listener
}

func main() {
	bin := flag.String("bin", "", "directory with the gateway, pionecho and devsim binaries")
	work := flag.String("work", "", "scratch directory (key files, configs, logs)")
	smoke := flag.Bool("smoke", false, "every measurement at a tiny size; exit 0 only if every step worked")
	quick := flag.Bool("quick", false, "medium sizes: indicative numbers in a few minutes")
	md := flag.String("md", "", "write the report to this file")
	commit := flag.String("commit", "", "version of the code measured, for the report")
	only := flag.String("only", "", "run only these steps, comma-separated: handshake, forwarding, latency, memory, fleet, profile, flood")
	flag.Parse()
	if *bin == "" || *work == "" {
		fmt.Fprintln(os.Stderr, "usage: runner --bin DIR --work DIR [--smoke] [--md FILE]")
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
	run := func(step string) bool { return *only == "" || slices.Contains(strings.Split(*only, ","), step) }
	for _, s := range []struct {
		name string
		f    func()
	}{{"handshake", e.handshakes}, {"forwarding", e.forwarding}, {"latency", e.latency}, {"memory", e.memory}, {"fleet", e.fleet}} {
		if run(s.name) {
			s.f()
		}
	}
	switch {
	case e.smoke || !run("profile"):
	case time.Since(e.started) > 10*time.Minute:
		e.logf("skip profile: over 10 minutes already (bench/run.sh must stay under 15)")
	default:
		e.profile()
	}
	if run("flood") {
		e.flood()
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
	fmt.Printf("\n%d measurements in %s; %d failed\n", len(e.results)+len(e.floods), elapsed, len(e.failed))
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
	group    string // handshake, forwarding, latency, memory, fleet, profile
	mode     string // devsim profile, e.g. 1.3-dhe
	sessions int
	rep      int
	// onLine is called with every line devsim writes on stderr, with the
	// server and the result's extra values; phase markers are
	// "devsim: phase connect done", "devsim: phase steady start".
	onLine func(line string, srv *server, extra map[string]string)
}

// measure starts a server of kind, runs l against it with --server and
// --server-pid added, stops the server, checks and records the result.
// keys is the key file devsim reads and, except for libcoap, the server's;
// libcoap gets the shared text key libcoapKey.
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
	l.args = append(l.args, "--server", srv.addr, "--keys", keys, "--server-pid", fmt.Sprint(srv.pid()))
	if kind == kindGateway {
		l.args = append(l.args, "--backend", fmt.Sprintf("127.0.0.1:%d", backendPort))
	}
	extra := map[string]string{}
	if t.onLine != nil {
		l.onLine = func(line string) { t.onLine(line, srv, extra) }
	}
	res := e.runLoad(l)
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
