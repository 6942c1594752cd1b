package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// sourceIPs is how many loopback addresses raw-mode devices come from: real
// devices have their own addresses, and the gateway limits new sessions per
// source IP (200/s by default).
const sourceIPs = "256"

// handshakeModes are the handshakes compared, as devsim --mix profiles.
var handshakeModes = []struct{ mix, label string }{
	{"1.3-dhe", "DTLS 1.3 psk_dhe_ke (X25519)"},
	{"1.3-ke", "DTLS 1.3 psk_ke"},
	{"1.2-ccm8", "DTLS 1.2 PSK AES-128-CCM_8"},
}

// handshakes: server CPU per handshake, every mode, gateway and pion
// interleaved, libcoap for DTLS 1.2. Sessions are held (not closed) until
// the end of the connect phase, so close costs are not counted.
func (e *env) handshakes() {
	n := e.sz.handshakes
	for rep := 1; rep <= e.sz.reps; rep++ {
		for _, m := range handshakeModes {
			keys, err := e.keyFile(n, m.mix)
			if err != nil {
				e.fail("handshake keys", err)
				continue
			}
			args := []string{"--raw", "--devices", fmt.Sprint(n), "--mix", m.mix, "--duration", "0", "--concurrency", "16", "--source-ips", sourceIPs}
			for _, kind := range []string{kindGateway, kindPion} {
				e.measure(kind, load{name: fmt.Sprintf("handshake %s %s #%d", m.mix, kind, rep), args: args},
					keys, "", int64(n), 0, tags{group: "handshake", mode: m.mix, rep: rep})
			}
			if m.mix == "1.2-ccm8" {
				key := textKey()
				csv := filepath.Join(e.work, fmt.Sprintf("libcoap-%d.csv", n))
				if err := csvKeys(csv, n, key); err != nil {
					e.fail("libcoap keys", err)
					continue
				}
				e.measure(kindLibcoap, load{name: fmt.Sprintf("handshake %s libcoap #%d", m.mix, rep), args: args},
					csv, key, int64(n), 0, tags{group: "handshake", mode: m.mix, rep: rep})
			}
		}
	}
}

// forwardArgs are the devsim flags of a forwarding run: a fixed request
// rate, the same for every server, 100-byte CoAP requests.
func (e *env) forwardArgs(sessions, msgs int) []string {
	bound := time.Duration(float64(msgs)/e.sz.fwdRate*float64(time.Second)) + 30*time.Second
	return []string{"--raw", "--source-ips", sourceIPs, "--devices", fmt.Sprint(sessions), "--mix", "1.3-dhe", "--msg-rate", fmt.Sprint(e.sz.fwdRate),
		"--messages", fmt.Sprint(msgs), "--duration", bound.String(), "--size", "100", "--inflight", "64"}
}

// forwarding: server CPU per 100-byte request and response over
// established DTLS 1.3 sessions, gateway (to a UDP echo backend) vs pion
// echo.
func (e *env) forwarding() {
	for rep := 1; rep <= e.sz.reps; rep++ {
		for _, s := range e.sz.fwdSessions {
			keys, err := e.keyFile(s, "1.3-dhe")
			if err != nil {
				e.fail("forwarding keys", err)
				continue
			}
			for _, kind := range []string{kindGateway, kindPion} {
				e.measure(kind, load{name: fmt.Sprintf("forward %d sessions %s #%d", s, kind, rep), args: e.forwardArgs(s, e.sz.fwdMsgs)},
					keys, "", int64(s), int64(e.sz.fwdMsgs), tags{group: "forwarding", mode: "1.3-dhe", sessions: s, rep: rep})
			}
		}
	}
}

// latency: request latency at a low rate through the gateway, against
// pion echo, and straight to the UDP echo backend with no DTLS.
func (e *env) latency() {
	s, msgs := e.sz.latSessions, e.sz.latMsgs
	bound := time.Duration(float64(msgs)/e.sz.latRate*float64(time.Second)) + 30*time.Second
	args := []string{"--raw", "--source-ips", sourceIPs, "--devices", fmt.Sprint(s), "--mix", "1.3-dhe", "--msg-rate", fmt.Sprint(e.sz.latRate),
		"--messages", fmt.Sprint(msgs), "--duration", bound.String(), "--size", "100", "--inflight", "64"}
	keys, err := e.keyFile(s, "1.3-dhe")
	if err != nil {
		e.fail("latency keys", err)
		return
	}
	for _, kind := range []string{kindGateway, kindPion} {
		e.measure(kind, load{name: "latency " + kind, args: args}, keys, "", int64(s), int64(msgs),
			tags{group: "latency", mode: "1.3-dhe", sessions: s})
	}
	port, err := freePort()
	if err != nil {
		e.fail("latency direct", err)
		return
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	direct := append(append([]string{}, args...), "--no-dtls", "--server", addr, "--backend", addr)
	res := e.runLoad(load{name: "latency direct", args: direct})
	res.server, res.group, res.sessions = "direct", "latency", s
	if err := res.check(0, int64(msgs)); err != nil {
		e.fail("latency direct", err)
		res.err = err
	}
	e.results = append(e.results, res)
}

// memory: RSS per idle established session, DTLS 1.3 and 1.2; goroutines
// of pion echo from its pprof listener.
func (e *env) memory() {
	n := e.sz.memSessions
	for _, mix := range []string{"1.3-dhe", "1.2-ccm8"} {
		keys, err := e.keyFile(n, mix)
		if err != nil {
			e.fail("memory keys", err)
			continue
		}
		args := []string{"--raw", "--source-ips", sourceIPs, "--devices", fmt.Sprint(n), "--mix", mix, "--duration", "0",
			"--settle", e.sz.settle.String(), "--concurrency", "32", "--timeout", "20s"}
		kinds := []string{kindGateway, kindPion}
		if mix == "1.2-ccm8" {
			kinds = append(kinds, kindLibcoap)
		}
		key := textKey()
		csv := filepath.Join(e.work, fmt.Sprintf("libcoap-mem-%d.csv", n))
		if err := csvKeys(csv, n, key); err != nil {
			e.fail("libcoap keys", err)
			continue
		}
		for _, kind := range kinds {
			k := keys
			if kind == kindLibcoap {
				k = csv
			}
			e.measure(kind, load{name: fmt.Sprintf("memory %s %d %s", mix, n, kind), args: args, timeout: 5 * time.Minute},
				k, key, int64(n), 0, tags{group: "memory", mode: mix, sessions: n, onLine: e.goroutines})
		}
	}
}

// goroutines records the server's goroutine count halfway through
// --settle: pion echo's from its pprof listener, the gateway's from the
// go_goroutines gauge of its admin /metrics, if it has one.
func (e *env) goroutines(line string, srv *server, extra map[string]string) {
	if (srv.pprof == "" && srv.metrics == "") || !strings.HasPrefix(line, "devsim: phase connect done") {
		return
	}
	time.Sleep(e.sz.settle / 2)
	url, prefix := srv.metrics, "go_goroutines "
	if srv.pprof != "" {
		url, prefix = "http://"+srv.pprof+"/debug/pprof/goroutine?debug=1", "goroutine profile: total "
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<20))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			extra["goroutines"] = strings.TrimSpace(v)
			return
		}
	}
}

// fleet: an LwM2M fleet through the gateway with the tool's whole repertoire
// (mix, connect rate, Register/Update/Notify/Read, churn).
func (e *env) fleet() {
	const mix = "1.3-dhe=60,1.3-ke=20,1.2-ccm8=20"
	n := e.sz.fleet
	keys, err := e.keyFile(n, mix)
	if err != nil {
		e.fail("fleet keys", err)
		return
	}
	// LwM2M devices all come from 127.0.0.1 (internal/devsim binds there):
	// stay under the gateway's per-IP handshake rate.
	args := []string{"--devices", fmt.Sprint(n), "--mix", mix, "--connect-rate", "150",
		"--pattern", "update=50,notify=30,read=20", "--msg-rate", fmt.Sprint(e.sz.fleetRate),
		"--churn", "0.01", "--duration", e.sz.fleetDur.String()}
	e.measure(kindGateway, load{name: "lwm2m fleet", args: args}, keys, "", int64(n), 1,
		tags{group: "fleet", mode: mix, sessions: n})
}

// profile: perf samples of the gateway and of pion echo during the
// connect phase of a DTLS 1.3 psk_dhe_ke handshake run and the steady
// phase of a forwarding run (separate runs, not counted in the figures:
// perf itself costs time).
func (e *env) profile() {
	if _, err := exec.LookPath("perf"); err != nil {
		e.logf("skip profile: perf not installed")
		return
	}
	n := e.sz.handshakes
	hsKeys, err := e.keyFile(n, "1.3-dhe")
	if err != nil {
		e.fail("profile keys", err)
		return
	}
	s := e.sz.fwdSessions[len(e.sz.fwdSessions)-1]
	fwdKeys, err := e.keyFile(s, "1.3-dhe")
	if err != nil {
		e.fail("profile keys", err)
		return
	}
	msgs := int(e.sz.fwdRate) * (e.sz.perfSeconds + 4)
	for _, kind := range []string{kindGateway, kindPion} {
		hs := load{name: "profile handshakes " + kind, args: []string{"--raw", "--devices", fmt.Sprint(n), "--mix", "1.3-dhe",
			"--duration", "0", "--concurrency", "16", "--source-ips", sourceIPs}}
		e.perfRun(kind, hs, hsKeys, "devsim: phase connect start", int64(n), 0, tags{group: "profile", mode: "handshake 1.3-dhe", sessions: n})
		fwd := load{name: "profile forwarding " + kind, args: e.forwardArgs(s, msgs)}
		e.perfRun(kind, fwd, fwdKeys, "devsim: phase steady start", int64(s), int64(msgs), tags{group: "profile", mode: "forwarding", sessions: s})
	}
}

// perfRun measures l against a server of kind with perf recording the
// server for perfSeconds from the devsim line starting with marker, and
// keeps perf's top symbols in the result.
func (e *env) perfRun(kind string, l load, keys, marker string, wantHS, wantReq int64, t tags) {
	data := filepath.Join(e.work, sanitize(l.name)+".perf.data")
	var perf *exec.Cmd
	t.onLine = func(line string, srv *server, _ map[string]string) {
		if perf != nil || !strings.HasPrefix(line, marker) {
			return
		}
		perf = exec.Command("perf", "record", "-F", "499", "-g", "-p", fmt.Sprint(srv.pid()), "-o", data,
			"--", "sleep", fmt.Sprint(e.sz.perfSeconds))
		if err := perf.Start(); err != nil {
			perf = nil
		}
	}
	res := e.measure(kind, l, keys, "", wantHS, wantReq, t)
	if perf == nil || res == nil {
		return
	}
	_ = perf.Wait()
	report := func(args ...string) string {
		out, err := exec.Command("perf", append([]string{"report", "-i", data, "--stdio", "--sort", "symbol", "-g", "none"}, args...)...).Output()
		if err != nil {
			return ""
		}
		var top []string
		for line := range strings.SplitSeq(string(out), "\n") {
			// perf pads the symbol column and ends rows with "-  -".
			if t := strings.TrimRight(strings.TrimSpace(line), " -"); t != "" && !strings.HasPrefix(t, "#") && len(top) < 30 {
				top = append(top, t)
			}
		}
		return strings.Join(top, "\n")
	}
	res.extra["perf"] = report("--no-children", "--percent-limit", "1")
	res.extra["perf_children"] = report("--children", "--percent-limit", "5")
}
