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
	"time"
)

// summary is the part of devsim's --json output the benchmarks use.
type summary struct {
	Handshakes struct {
		OK        int64   `json:"ok"`
		Failed    int64   `json:"failed"`
		PerSecond float64 `json:"per_second"`
		ConnectOK int64   `json:"connect_phase_ok"`
		Latency   latency `json:"latency"`
	} `json:"handshakes"`
	Requests struct {
		OK         int64   `json:"ok"`
		Failed     int64   `json:"failed"`
		PerSecond  float64 `json:"per_second"`
		SteadyDone int64   `json:"steady_phase_done"`
		Late       int64   `json:"late_inflight_full"`
		Latency    latency `json:"latency"`
	} `json:"requests"`
	Reconnects int64            `json:"reconnects"`
	Errors     map[string]int64 `json:"errors"`
	Server     *struct {
		ConnectCPUms      float64 `json:"connect_cpu_ms"`
		CPUPerHandshakeUS float64 `json:"cpu_us_per_handshake"`
		SteadyCPUms       float64 `json:"steady_cpu_ms"`
		CPUPerRequestUS   float64 `json:"cpu_us_per_request"`
		RSSBefore         int64   `json:"rss_before_bytes"`
		RSSConnected      int64   `json:"rss_connected_bytes"`
		SessionsAtRSS     int64   `json:"sessions_at_rss"`
		RSSPerSession     float64 `json:"rss_per_session_bytes"`
		ThreadsAfter      int     `json:"threads_connected"`
		Error             string  `json:"error"`
	} `json:"server"`
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

// runLoad runs devsim with --json and returns its summary. The command
// line is recorded (with the scratch directory shortened) for the report.
func (e *env) runLoad(l load) *result {
	args := append([]string{"--json", "--progress", "-1s"}, l.args...)
	res := &result{name: l.name, cmd: "devsim " + strings.ReplaceAll(strings.Join(args, " "), e.work, "$WORK"), extra: map[string]string{}}
	e.logf("run  %-38s %s", l.name, res.cmd)
	timeout := l.timeout
	if timeout == 0 {
		timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "devsim"), args...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		res.err = err
		return res
	}
	logf, err := os.Create(filepath.Join(e.work, sanitize(l.name)+".devsim.log"))
	if err != nil {
		res.err = err
		return res
	}
	defer logf.Close()
	if err := cmd.Start(); err != nil {
		res.err = err
		return res
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(io.TeeReader(stderr, logf))
		for sc.Scan() {
			if l.onLine != nil {
				l.onLine(sc.Text())
			}
		}
	}()
	wg.Wait()
	if err := cmd.Wait(); err != nil {
		res.err = fmt.Errorf("devsim: %w (log %s)", err, logf.Name())
		return res
	}
	var s summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
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
