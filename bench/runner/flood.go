package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore/file"
)

// The flood scenario of issue 12: devsim --flood sends spoofed ClientHellos
// (raw IPv4 as root, sources spoofed in 127.0.0.0/8; else a UDP socket per
// hello) at floodRate for floodDur, each once or each twice back to back,
// while established devices send a request a second (devsim, LwM2M Update,
// CoAP retransmission), returning devices reboot in a loop and new devices
// dial in a loop (floodprobe.go). The gateway is sampled every second
// (RSS from /proc, goroutines from its /metrics) before, during and for
// floodAfter after the flood.

// floodShapes are the two shapes of the issue.
var floodShapes = []struct {
	repeat int
	label  string
}{{1, "each hello once"}, {2, "each hello twice"}}

// floodRun is one flood scenario's outcome.
type floodRun struct {
	name, label      string
	repeat           int
	rate             float64
	dur, after       time.Duration
	returning, fresh *attempts
	registerErrs     int
	established      *summary // devsim's summary of the established devices
	estCmd, floodCmd string
	flood            floodToolSummary
	rssPre, rssPeak  int64
	rssAfter         int64         // floodAfter after the flood
	recovered        time.Duration // from the flood's end to RSS ≤ 1.2 × rssPre; -1: not within floodAfter
	gorPre, gorPeak  float64
	cpu              time.Duration // gateway CPU during the flood
	metrics          map[string]float64
	kernelDrops      int64
	maxHandshakes    int
	err              error
}

// floodToolSummary is the part of devsim --flood --json the report uses.
type floodToolSummary struct {
	Socket     string  `json:"socket"`
	Hellos     int64   `json:"hellos"`
	Datagrams  int64   `json:"datagrams"`
	HellosPerS float64 `json:"hellos_per_s"`
	Errors     int64   `json:"send_errors"`
}

// flood runs the scenario in both shapes.
func (e *env) flood() {
	n, legitN := e.sz.floodEstablished, e.sz.floodReturning+e.sz.floodFresh
	keys, err := e.keyFile(n+legitN, "1.3-dhe")
	if err != nil {
		e.fail("flood keys", err)
		return
	}
	for _, sh := range floodShapes {
		r := e.floodOnce(keys, sh.repeat, sh.label)
		if r.err != nil {
			e.fail(r.name, r.err)
		}
		e.floods = append(e.floods, r)
	}
}

func (e *env) floodOnce(keyPath string, repeat int, label string) *floodRun {
	sz := e.sz
	r := &floodRun{name: fmt.Sprintf("flood %.0f/s x%d", sz.floodRate, repeat), label: label, repeat: repeat, rate: sz.floodRate,
		dur: sz.floodDur, after: sz.floodAfter, recovered: -1, maxHandshakes: 4096}
	data, err := os.ReadFile(keyPath)
	if err != nil {
		r.err = err
		return r
	}
	keys, err := file.Parse(data)
	if err != nil {
		r.err = err
		return r
	}
	backendPort, err := freePort()
	if err != nil {
		r.err = err
		return r
	}
	srv, err := e.startServer(kindGateway, keyPath, backendPort, sanitize(r.name))
	if err != nil {
		r.err = err
		return r
	}
	defer srv.stop()
	backend := fmt.Sprintf("127.0.0.1:%d", backendPort)

	// Established devices: connect, then a request per device per second
	// for the whole scenario.
	steady := 5*time.Second + sz.floodDur + sz.floodAfter + 5*time.Second
	estArgs := []string{"--devices", fmt.Sprint(sz.floodEstablished), "--mix", "1.3-dhe", "--connect-rate", "150",
		"--pattern", "update", "--msg-rate", fmt.Sprint(sz.floodEstablished), "--duration", steady.String(),
		"--timeout", "20s", "--server", srv.addr, "--keys", keyPath, "--backend", backend, "--server-pid", fmt.Sprint(srv.pid())}
	steadyStart := make(chan struct{})
	var once sync.Once
	estDone := make(chan *result, 1)
	go func() {
		estDone <- e.runLoad(load{name: r.name + " established", args: estArgs, timeout: steady + 5*time.Minute,
			onLine: func(line string) {
				if strings.HasPrefix(line, "devsim: phase steady start") {
					once.Do(func() { close(steadyStart) })
				}
			}})
	}()
	var est *result
	select {
	case <-steadyStart:
	case est = <-estDone:
		r.err = fmt.Errorf("established devices: %v", est.err)
		return r
	}

	l := &legit{server: srv.addr, keys: keys[sz.floodEstablished:], returning: sz.floodReturning, fresh: sz.floodFresh}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	err = l.connect(ctx)
	cancel()
	defer l.close()
	if err != nil {
		r.err = err
		<-estDone
		return r
	}
	time.Sleep(3 * time.Second) // settle: the connect phase's garbage collected
	r.rssPre, r.gorPre = e.floodSample(srv)
	m0, _ := gatewayMetrics(srv.metrics)
	drops0 := udpRcvbufErrors()
	cpu0, _, _ := procStat(srv.pid())

	// The flood and the legitimate devices, together.
	stop := make(chan struct{})
	legitDone := make(chan struct{})
	go func() { l.run(stop); close(legitDone) }()
	floodArgs := []string{"--flood", fmt.Sprint(sz.floodRate), "--flood-repeat", fmt.Sprint(repeat),
		"--server", srv.addr, "--duration", sz.floodDur.String(), "--json"}
	r.floodCmd = "devsim " + strings.Join(floodArgs, " ")
	floodDone := make(chan error, 1)
	go func() { floodDone <- e.runFloodTool(floodArgs, &r.flood) }()
	tick := time.NewTicker(time.Second)
	for waiting := true; waiting; {
		select {
		case err := <-floodDone:
			if err != nil {
				r.err = err
			}
			waiting = false
		case <-tick.C:
			rss, gor := e.floodSample(srv)
			r.rssPeak, r.gorPeak = max(r.rssPeak, rss), max(r.gorPeak, gor)
		}
	}
	close(stop)
	cpu1, _, _ := procStat(srv.pid())
	r.cpu = cpu1 - cpu0
	end := time.Now()
	for time.Since(end) < sz.floodAfter {
		<-tick.C
		rss, gor := e.floodSample(srv)
		r.rssPeak, r.gorPeak = max(r.rssPeak, rss), max(r.gorPeak, gor)
		if r.recovered < 0 && rss <= r.rssPre*6/5 {
			r.recovered = time.Since(end)
		}
		r.rssAfter = rss
	}
	tick.Stop()
	<-legitDone
	r.returning, r.fresh, r.registerErrs = &l.returningA, &l.freshA, l.registerErrs
	r.kernelDrops = udpRcvbufErrors() - drops0
	if m1, err := gatewayMetrics(srv.metrics); err == nil {
		r.metrics = map[string]float64{}
		for k, v := range m1 {
			r.metrics[k] = v - m0[k]
		}
	}
	est = <-estDone
	r.estCmd = est.cmd
	if est.err != nil && r.err == nil {
		r.err = fmt.Errorf("established devices: %w", est.err)
	}
	r.established = est.sum
	return r
}

// floodSample is the gateway's RSS and goroutines now.
func (e *env) floodSample(srv *server) (rss int64, goroutines float64) {
	_, rss, _ = procStat(srv.pid())
	if m, err := gatewayMetrics(srv.metrics); err == nil {
		goroutines = m["go_goroutines"]
	}
	return rss, goroutines
}

// runFloodTool runs devsim --flood and decodes its summary.
func (e *env) runFloodTool(args []string, out *floodToolSummary) error {
	e.logf("run  %-38s devsim %s", "flood", strings.Join(args, " "))
	ctx, cancel := context.WithTimeout(context.Background(), e.sz.floodDur+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "devsim"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("devsim --flood: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return json.Unmarshal(stdout.Bytes(), out)
}
