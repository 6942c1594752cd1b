package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// summary is the part of devsim's --json output the benchmarks use.
type summary struct {
	Handshakes struct {
		OK        int64   `json:"ok"`
		Failed    int64   `json:"failed"`
		Retried   int64   `json:"retried"`
		PerSecond float64 `json:"per_second"`
		ConnectOK int64   `json:"connect_phase_ok"`
		Latency   latency `json:"latency"`
	} `json:"handshakes"`
	Requests struct {
		OK         int64   `json:"ok"`
		Failed     int64   `json:"failed"`
		PerSecond  float64 `json:"per_second"`
		SteadyDone int64   `json:"steady_phase_done"`
		ByOp       map[string]struct {
			OK     int64 `json:"ok"`
			Failed int64 `json:"failed"`
		} `json:"by_op"`
		Late    int64   `json:"late_inflight_full"`
		Latency latency `json:"latency"`
	} `json:"requests"`
	Reconnects int64            `json:"reconnects"`
	Errors     map[string]int64 `json:"errors"`
	Server     *serverSummary   `json:"server"`
}

// serverSummary is devsim's sample of the server process (--server-pid).
type serverSummary struct {
	ConnectCPUms      float64 `json:"connect_cpu_ms"`
	CPUPerHandshakeUS float64 `json:"cpu_us_per_handshake"`
	SteadyCPUms       float64 `json:"steady_cpu_ms"`
	CPUPerRequestUS   float64 `json:"cpu_us_per_request"`
	WakeCPUms         float64 `json:"wake_cpu_ms"`
	CPUPerWakeUS      float64 `json:"cpu_us_per_wake_request"`
	WakeRequests      int64   `json:"wake_requests"`
	RSSBefore         int64   `json:"rss_before_bytes"`
	RSSConnected      int64   `json:"rss_connected_bytes"`
	SessionsAtRSS     int64   `json:"sessions_at_rss"`
	RSSPerSession     float64 `json:"rss_per_session_bytes"`
	ThreadsAfter      int     `json:"threads_connected"`
	Error             string  `json:"error"`
}

type latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P95   float64 `json:"p95_ms"`
	P99   float64 `json:"p99_ms"`
}

// load is one devsim run.
type load struct {
	name string
	args []string
	// onLine is called with every line devsim writes on stderr (phase
	// markers: "devsim: phase connect done", "devsim: phase steady start").
	onLine func(line string)
	// timeout bounds the run.
	timeout time.Duration
}

// result is one measurement: a devsim run against one server.
type result struct {
	id     int // position in the report's list of commands
	name   string
	server string // kind
	cmd    string
	sum    *summary
	extra  map[string]string // goroutines, profile, notes
	err    error

	group, mode string
	sessions    int
	rep         int
}

// running is a devsim process started by startLoad.
type running struct {
	res    *result
	cmd    *exec.Cmd
	stdout bytes.Buffer
	logf   *os.File
	cancel context.CancelFunc
	read   sync.WaitGroup // the stderr reader

	mu      sync.Mutex
	lines   []string      // phase lines seen ("devsim: phase ...")
	changed chan struct{} // closed and replaced when lines grows
	exited  chan struct{} // closed when the stderr reader is done
}

// runLoad runs devsim with --json and returns its summary. The command
// line is recorded (with the scratch directory shortened) for the report.
func (e *env) runLoad(l load) *result {
	r := e.startLoad(l)
	return r.wait()
}

// startLoad starts devsim with --json in the background; wait returns its
// result. Phase lines can be waited for (waitPhase) and the process
// signalled (--wait-signal gates, SIGINT to end --hold devices).
func (e *env) startLoad(l load) *running {
	args := append([]string{"--json", "--progress", "-1s"}, l.args...)
	res := &result{name: l.name, cmd: "devsim " + strings.ReplaceAll(strings.Join(args, " "), e.work, "$WORK"), extra: map[string]string{}}
	e.nextID++
	res.id = e.nextID
	e.logf("run  #%d %-38s %s", res.id, l.name, res.cmd)
	r := &running{res: res, changed: make(chan struct{}), exited: make(chan struct{})}
	timeout := l.timeout
	if timeout == 0 {
		timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	r.cancel = cancel
	r.cmd = exec.CommandContext(ctx, filepath.Join(e.bin, "devsim"), args...)
	r.cmd.Stdout = &r.stdout
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	fail := func(err error) *running {
		res.err = err
		close(r.exited)
		return r
	}
	stderr, err := r.cmd.StderrPipe()
	if err != nil {
		return fail(err)
	}
	if r.logf, err = os.Create(filepath.Join(e.work, sanitize(l.name)+".devsim.log")); err != nil {
		return fail(err)
	}
	if err := r.cmd.Start(); err != nil {
		return fail(err)
	}
	r.read.Add(1)
	go func() {
		defer r.read.Done()
		defer close(r.exited)
		sc := bufio.NewScanner(io.TeeReader(stderr, r.logf))
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "devsim: phase ") {
				r.mu.Lock()
				r.lines = append(r.lines, line)
				close(r.changed)
				r.changed = make(chan struct{})
				r.mu.Unlock()
			}
			if l.onLine != nil {
				l.onLine(line)
			}
		}
	}()
	return r
}

// waitPhase waits until devsim has printed its nth phase line starting
// with prefix (n from 1), the process ended, or limit passed.
func (r *running) waitPhase(prefix string, n int, limit time.Duration) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		seen := 0
		for _, l := range r.lines {
			if strings.HasPrefix(l, prefix) {
				seen++
			}
		}
		changed := r.changed
		r.mu.Unlock()
		if seen >= n {
			return nil
		}
		select {
		case <-changed:
		case <-r.exited:
			return fmt.Errorf("%s: devsim ended before %q", r.res.name, prefix)
		case <-deadline.C:
			return fmt.Errorf("%s: no %q after %s", r.res.name, prefix, limit)
		}
	}
}

// signal sends sig to the devsim process.
func (r *running) signal(sig os.Signal) error {
	if r.cmd == nil || r.cmd.Process == nil {
		return fmt.Errorf("%s: not running", r.res.name)
	}
	return r.cmd.Process.Signal(sig)
}

// wait waits for the process and parses its summary.
func (r *running) wait() *result {
	res := r.res
	defer r.cancel()
	if res.err != nil {
		return res
	}
	r.read.Wait()
	if r.logf != nil {
		defer r.logf.Close()
	}
	if err := r.cmd.Wait(); err != nil {
		res.err = fmt.Errorf("devsim: %w (log %s)", err, r.logf.Name())
		return res
	}
	var s summary
	if err := json.Unmarshal(r.stdout.Bytes(), &s); err != nil {
		res.err = fmt.Errorf("devsim output: %w", err)
		return res
	}
	res.sum = &s
	return res
}

func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, name)
}

// check verifies a result: the run worked, no handshake or request
// failed, and the expected work was done.
func (r *result) check(wantHandshakes, wantRequests int64) error {
	if r.err != nil {
		return r.err
	}
	s := r.sum
	switch {
	case s.Handshakes.Failed > 0:
		return fmt.Errorf("%d handshakes failed (%v)", s.Handshakes.Failed, s.Errors)
	case s.Handshakes.OK < wantHandshakes:
		return fmt.Errorf("%d handshakes, want %d", s.Handshakes.OK, wantHandshakes)
	case s.Requests.Failed > 0:
		return fmt.Errorf("%d requests failed (%v)", s.Requests.Failed, s.Errors)
	case s.Requests.OK < wantRequests:
		return fmt.Errorf("%d requests, want %d", s.Requests.OK, wantRequests)
	case s.Server != nil && s.Server.Error != "":
		return fmt.Errorf("server sampling: %s", s.Server.Error)
	}
	return nil
}
