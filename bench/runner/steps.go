package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
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

// handshakes: server CPU per handshake, every mode, the gateway (lean and
// pion plane) and raw pion interleaved, libcoap for DTLS 1.2. Sessions are
// held (not closed) until the end of the connect phase, so close costs are
// not counted.
func (e *env) handshakes() {
	n := e.sz.handshakes
	for rep := 1; rep <= e.sz.hsReps; rep++ {
		for _, m := range handshakeModes {
			keys, err := e.keyFile(n, m.mix)
			if err != nil {
				e.fail("handshake keys", err)
				continue
			}
			args := []string{"--raw", "--devices", fmt.Sprint(n), "--mix", m.mix, "--duration", "0", "--concurrency", "16", "--source-ips", sourceIPs}
			for _, kind := range []string{kindGateway, kindPion, kindGatewayPion} {
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

// forwardArgs are the devsim flags of a forwarding run: after the
// handshakes, one warm-up request per device (a forwarding server opens its
// upstream socket on a session's first datagram), then a fixed request rate,
// the same for every server, 100-byte CoAP requests.
func (e *env) forwardArgs(sessions, msgs int) []string {
	return e.forwardArgsAt(sessions, msgs, e.sz.fwdRate)
}

// forwardArgsAt is forwardArgs at another request rate.
func (e *env) forwardArgsAt(sessions, msgs int, rate float64) []string {
	bound := time.Duration(float64(msgs)/rate*float64(time.Second)) + 30*time.Second
	return []string{"--raw", "--source-ips", sourceIPs, "--devices", fmt.Sprint(sessions), "--mix", "1.3-dhe", "--warmup",
		"--msg-rate", fmt.Sprint(rate), "--messages", fmt.Sprint(msgs), "--duration", bound.String(),
		"--size", "100", "--inflight", "64", "--timeout", "30s"}
}

// forwarding: server CPU per 100-byte request and response over
// established DTLS 1.3 sessions: the gateway (to a UDP echo backend) on
// both planes, raw pion echo, and the floor (plain UDP through a relay
// with AES-GCM, same devices and backend). The gateway's lean runs then
// idle past the cipher release and send one request per session (wake).
func (e *env) forwarding() {
	s := e.sz.fwdSessions
	keys, err := e.keyFile(s, "1.3-dhe")
	if err != nil {
		e.fail("forwarding keys", err)
		return
	}
	for rep := 1; rep <= e.sz.reps; rep++ {
		for _, kind := range []string{kindGateway, kindFloor, kindPion, kindGatewayPion} {
			args := e.forwardArgs(s, e.sz.fwdMsgs)
			if kind == kindGateway {
				args = append(args, "--wake-after", e.sz.wakeAfter.String())
			}
			e.measure(kind, load{name: fmt.Sprintf("forward %d sessions %s #%d", s, kind, rep), args: args},
				keys, "", int64(s), int64(e.sz.fwdMsgs), tags{group: "forwarding", mode: "1.3-dhe", sessions: s, rep: rep})
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

// memory: RSS per idle established session, DTLS 1.3 and 1.2, the
// gateway on both planes, raw pion and (1.2) libcoap; goroutines of the
// Go servers from pprof and /metrics.
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
		kinds := []string{kindGateway, kindPion, kindGatewayPion}
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
				k, key, int64(n), 0, tags{group: "memory", mode: mix, sessions: n, onLine: e.goroutines, prepare: e.settleRSS})
		}
	}
}

// settleRSS lets a Go server return the garbage of its start-up (the key
// file's parse) before devsim reads its RSS "before": a collection through
// its pprof heap endpoint, then RSS steady for five seconds (not in the
// smoke run). Without it the baseline holds memory the runtime gives back
// while the sessions connect, and a gateway session of a few kilobytes
// measures near zero.
func (e *env) settleRSS(srv *server) {
	if srv.pprof == "" {
		return
	}
	if err := fetch(srv.pprof+"/heap?gc=1", filepath.Join(e.work, fmt.Sprintf("settle-%d.heap.pb.gz", srv.pid()))); err != nil {
		e.logf("%s: no collection before the baseline: %v", srv.kind, err)
		return
	}
	if !e.smoke {
		waitRSSSettled(srv.pid(), 30*time.Second)
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
	if url == "" {
		url, prefix = srv.pprof+"/goroutine?debug=1", "goroutine profile: total "
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
