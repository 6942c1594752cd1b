// Command dashboard-render produces docs/dashboard.png, the screenshot of the Grafana
// dashboard deploy/grafana/gateway-dashboard.json, from a real run, without
// a Grafana or Prometheus server:
//
//  1. it builds the gateway (go build ./cmd/gateway) and runs
//     "gateway serve --config" on a configuration and a key file of fresh
//     random keys it writes to a temporary directory, with a devsim LwM2M
//     backend, everything on loopback;
//  2. it drives the gateway with simulated devices (internal/devsim): a
//     fleet of every handshake kind that registers, updates, notifies and
//     gets read, reconnecting now and then, plus scripted misbehaviours
//     (wrong keys, unknown identities, policy refusals, L1, a backend that
//     is down, stray and oversized datagrams, a ClientHello flood, a
//     register storm);
//  3. it scrapes the gateway's /metrics every --interval for --duration;
//  4. it evaluates every query of the dashboard JSON over the scraped
//     samples (a PromQL subset, see promql.go), with $window set to
//     --window, lays the panels out on the dashboard's own grid as inline
//     SVG in one HTML page, and screenshots it with headless Chromium.
//
// Run from the repository root:
//
//	go run ./tools/dashboard-render
//
// The package has no tests: go test ./... only compiles it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"go.uber.org/zap"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

type options struct {
	dashboard, out, htmlOut, gateway, chromium string
	faults                                     string
	duration, interval, window                 time.Duration
	devices, width                             int
	keep                                       bool
}

func run() error {
	var o options
	flag.StringVar(&o.dashboard, "dashboard", "deploy/grafana/gateway-dashboard.json", "dashboard JSON whose panels are rendered")
	flag.StringVar(&o.out, "out", "docs/dashboard.png", "PNG to write")
	flag.StringVar(&o.htmlOut, "html", "", "also keep the rendered HTML page here")
	flag.StringVar(&o.gateway, "gateway", "", "gateway binary to run (default: go build ./cmd/gateway into the temporary directory)")
	flag.StringVar(&o.chromium, "chromium", "", "headless browser (default: chromium, chromium-browser or google-chrome from PATH)")
	flag.DurationVar(&o.duration, "duration", 80*time.Second, "length of the run (scrape period), 30s..10m")
	flag.DurationVar(&o.interval, "interval", time.Second, "scrape interval")
	flag.DurationVar(&o.window, "window", 10*time.Second, "value of the dashboard's $window (rate window) in the render")
	flag.IntVar(&o.devices, "devices", 40, "fleet size, 1..500")
	flag.IntVar(&o.width, "width", 1600, "page width in pixels")
	flag.StringVar(&o.faults, "faults", "all", "scripted faults, comma-separated: wrongkey, unknown, policy, l1, lab, stray, flood, storm; all; none")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (config, keys, gateway log)")
	flag.Parse()
	if o.duration < 30*time.Second || o.duration > 10*time.Minute || o.devices < 1 || o.devices > 500 ||
		o.interval < 100*time.Millisecond || o.window < 2*o.interval {
		return errors.New("bad flags: --duration 30s..10m, --devices 1..500, --interval >= 100ms, --window >= 2 intervals")
	}

	// Every dashboard query must parse before anything runs.
	dash, err := loadDashboard(o.dashboard)
	if err != nil {
		return err
	}
	vars := map[string]string{"job": ".*", "instance": ".*", "window": promDuration(o.window), "datasource": "prometheus"}
	for _, p := range dash.Panels {
		for _, t := range p.Targets {
			if _, err := parseQuery(substitute(t.Expr, vars)); err != nil {
				return fmt.Errorf("panel %q: %s: %w", p.Title, t.Expr, err)
			}
		}
	}
	browser, err := findBrowser(o.chromium)
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "gw-dashboard-")
	if err != nil {
		return err
	}
	if o.keep {
		logf("temporary directory %s kept", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	gwBin := o.gateway
	if gwBin == "" {
		gwBin = filepath.Join(dir, "gateway")
		logf("building the gateway")
		cmd := exec.Command("go", "build", "-o", gwBin, "./cmd/gateway")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/gateway (run from the repository root): %w", err)
		}
	}

	backend, err := devsim.NewBackend("127.0.0.1:0", zap.NewNop())
	if err != nil {
		return err
	}
	defer backend.Close()
	gwAddr, err := freePort("udp")
	if err != nil {
		return err
	}
	labAddr, err := freePort("udp") // nothing listens there: the "lab" backend is down
	if err != nil {
		return err
	}
	adminAddr, err := freePort("tcp")
	if err != nil {
		return err
	}
	cfgPath, err := gatewayConfig(dir, gwAddr, adminAddr, backend.Addr().String(), labAddr)
	if err != nil {
		return err
	}
	faults := map[string]bool{}
	for _, f := range strings.Split(o.faults, ",") {
		switch f = strings.TrimSpace(f); f {
		case "all", "wrongkey", "unknown", "policy", "l1", "lab", "stray", "flood", "storm":
			faults[f] = true
		case "none", "":
		default:
			return fmt.Errorf("unknown fault %q", f)
		}
	}
	sc := newScenario(o.devices, gwAddr, backend, o.duration, faults, logf)
	if err := sc.writeKeys(filepath.Join(dir, "keys.yaml")); err != nil {
		return err
	}

	logFile, err := os.Create(filepath.Join(dir, "gateway.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	gw := exec.Command(gwBin, "serve", "--config", cfgPath)
	gw.Stdout, gw.Stderr = logFile, logFile
	if err := gw.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- gw.Wait() }()
	stopGateway := func() {
		_ = gw.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = gw.Process.Kill()
			<-exited
		}
	}
	defer func() {
		if gw.ProcessState == nil {
			stopGateway()
		}
	}()
	base := "http://" + adminAddr
	if err := waitReady(base+"/readyz", exited); err != nil {
		return fmt.Errorf("%w (gateway log: %s)", err, tail(logFile.Name()))
	}
	logf("gateway %s up (admin %s); running %d devices for %s, scraping every %s",
		gwAddr, adminAddr, o.devices, o.duration, o.interval)

	ctx, cancel := context.WithTimeout(context.Background(), o.duration+30*time.Second)
	defer cancel()
	runCtx, stopRun := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc.run(runCtx)
	}()
	h := &history{}
	n := int(o.duration / o.interval)
	err = scrapeLoop(ctx, base+"/metrics", "lwm2m-gateway", adminAddr, o.interval, n, h, func(i int) {
		if (i+1)%15 == 0 {
			logf("%d/%d scrapes", i+1, n)
		}
	})
	stopRun()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		logf("warning: simulated devices still busy after 20s; going on")
	}
	stopGateway()
	if err != nil {
		return fmt.Errorf("scrape: %w", err)
	}
	if o.keep {
		if err := dumpScrapes(filepath.Join(dir, "scrapes.txt"), h); err != nil {
			return err
		}
	}

	pg := &page{
		width: o.width,
		title: dash.Title,
		vars: []string{"Data source: Prometheus", "Job: All", "Instance: All",
			"Rate window: " + promDuration(o.window) + windowNote(o.window)},
		note: fmt.Sprintf("Rendered by tools/dashboard-render from a real run: gateway serve, %d simulated devices (DTLS 1.3 and 1.2) plus scripted faults, on loopback; "+
			"/metrics scraped every %s for %s, each panel's query from gateway-dashboard.json evaluated on the samples.",
			o.devices, o.interval, o.duration),
		times: h.times,
	}
	for i := range dash.Panels {
		p := &dash.Panels[i]
		res, err := p.evaluate(h, vars)
		if err != nil {
			return err
		}
		pg.panels = append(pg.panels, p)
		pg.results = append(pg.results, res)
	}
	page := pg.html()
	htmlPath := filepath.Join(dir, "dashboard.html")
	if err := os.WriteFile(htmlPath, []byte(page), 0o644); err != nil {
		return err
	}
	if o.htmlOut != "" {
		if err := os.WriteFile(o.htmlOut, []byte(page), 0o644); err != nil {
			return err
		}
	}
	if err := screenshot(browser, htmlPath, o.out, o.width, pg.height()); err != nil {
		return err
	}
	st, err := os.Stat(o.out)
	if err != nil {
		return err
	}
	logf("wrote %s (%d KB, %dx%d)", o.out, st.Size()/1024, o.width, pg.height())
	return nil
}

// promDuration writes d as Prometheus does: 10s, 5m, 1h.
func promDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}

func windowNote(w time.Duration) string {
	if w == 5*time.Minute {
		return ""
	}
	return " (dashboard default 5m; short run)"
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "render: "+format+"\n", args...)
}

// freePort returns a loopback address with a port that was free a moment ago.
func freePort(network string) (string, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitReady(url string, exited <-chan error) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("gateway exited: %v", err)
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return errors.New("gateway not ready after 20s")
}

func tail(path string) string {
	data, _ := os.ReadFile(path)
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return strings.TrimSpace(string(data))
}

func findBrowser(flagValue string) (string, error) {
	if flagValue != "" {
		return exec.LookPath(flagValue)
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no headless browser: install one (Debian: apt-get install -y chromium) or pass --chromium")
}

// screenshot renders htmlPath to a PNG with headless Chromium.
func screenshot(browser, htmlPath, out string, w, h int) error {
	absOut, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	profile, err := os.MkdirTemp("", "gw-chromium-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(profile)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-first-run", "--hide-scrollbars", "--user-data-dir="+profile,
		"--screenshot="+absOut, fmt.Sprintf("--window-size=%d,%d", w, h), "file://"+htmlPath)
	if outp, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", browser, err, outp)
	}
	return nil
}
