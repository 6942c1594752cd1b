package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"text/tabwriter"
)

// row is one line of the result table.
type row struct {
	label, gw, other, ratio, target, met, ref, runs string
}

type table struct{ rows []row }

// sel returns the successful results that match (mode "" and sessions 0
// match any).
func (e *env) sel(group, server, mode string, sessions int) []*result {
	var out []*result
	for _, r := range e.results {
		if r.err != nil || r.sum == nil || r.group != group || r.server != server ||
			(mode != "" && r.mode != mode) || (sessions != 0 && r.sessions != sessions) {
			continue
		}
		out = append(out, r)
	}
	return out
}

func vals(rs []*result, f func(*result) float64) []float64 {
	out := make([]float64, 0, len(rs))
	for _, r := range rs {
		if r.sum.Server != nil {
			out = append(out, f(r))
		}
	}
	return out
}

// runIDs names the runs a row comes from (see Commands in the report).
func runIDs(sets ...[]*result) string {
	var ids []string
	for _, rs := range sets {
		for _, r := range rs {
			ids = append(ids, fmt.Sprintf("#%d", r.id))
		}
	}
	if len(ids) == 0 {
		return "—"
	}
	return strings.Join(ids, " ")
}

func mean(xs []float64) (float64, bool) {
	if len(xs) == 0 {
		return 0, false
	}
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs)), true
}

func cpuHS(r *result) float64   { return r.sum.Server.CPUPerHandshakeUS }
func cpuReq(r *result) float64  { return r.sum.Server.CPUPerRequestUS }
func cpuWake(r *result) float64 { return r.sum.Server.CPUPerWakeUS }
func rssKB(r *result) float64   { return r.sum.Server.RSSPerSession / 1024 }

func num(v float64, ok bool, format string) string {
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}

// median is the middle value (the mean of the two middle ones for an even
// count).
func median(xs []float64) (float64, bool) {
	if len(xs) == 0 {
		return 0, false
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2], true
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2, true
}

// pairedRatios are the ratios gw/other of the runs of each repetition (run
// next to each other, so a slow drift of the machine's speed cancels out);
// nil unless both sides have one run per repetition.
func pairedRatios(gw, other []*result, f func(*result) float64) []float64 {
	if len(gw) != len(other) {
		return nil
	}
	var out []float64
	for i := range gw {
		if gw[i].rep != other[i].rep || gw[i].sum.Server == nil || other[i].sum.Server == nil || f(other[i]) <= 0 {
			return nil
		}
		out = append(out, f(gw[i])/f(other[i]))
	}
	return out
}

// ratioRow compares the gateway with another server on one metric against
// a maximum ratio. With three repetitions or more the values are medians
// and the ratio is the median of the per-repetition ratios, which one run
// disturbed by the machine cannot move; with fewer, means and the ratio of
// the means.
func ratioRow(label string, gw, other []*result, f func(*result) float64, limit float64, unit, otherName, ref string) row {
	avg := mean
	paired := pairedRatios(gw, other, f)
	if len(paired) >= 3 {
		avg = median
	}
	g, okG := avg(vals(gw, f))
	o, okO := avg(vals(other, f))
	r := row{label: label, gw: num(g, okG, "%.1f "+unit), other: otherName + " " + num(o, okO, "%.1f "+unit),
		target: fmt.Sprintf("≤ %.2f×", limit), ratio: "n/a", met: "n/a", ref: ref, runs: runIDs(gw, other)}
	if okG && okO && o > 0 {
		ratio := g / o
		if len(paired) >= 3 {
			ratio, _ = median(paired)
		}
		r.ratio = fmt.Sprintf("%.2f×", ratio)
		r.met = yesNo(ratio <= limit)
	}
	return r
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

// table builds the one table of the report: the targets of issue 10
// first, then the other measurements.
func (e *env) table() table {
	var t table
	add := func(r row) { t.rows = append(t.rows, r) }
	for _, m := range handshakeModes {
		pp := e.sel("handshake", kindGatewayPion, m.mix, 0)
		v, ok := mean(vals(pp, cpuHS))
		ref := "gateway, pion plane " + num(v, ok, "%.1f µs")
		if m.mix == "1.2-ccm8" {
			lc := e.sel("handshake", kindLibcoap, m.mix, 0)
			v, ok := mean(vals(lc, cpuHS))
			ref += "; libcoap+GnuTLS " + num(v, ok, "%.1f µs")
			pp = append(pp, lc...)
		}
		r := ratioRow("Handshake CPU, "+m.label, e.sel("handshake", kindGateway, m.mix, 0), e.sel("handshake", kindPion, m.mix, 0), cpuHS, 1.05, "µs", "raw pion", ref)
		r.runs += " " + runIDs(pp)
		add(r)
	}
	s := e.sz.fwdSessions
	gw, fl, pi, pp := e.sel("forwarding", kindGateway, "", s), e.sel("forwarding", kindFloor, "", s), e.sel("forwarding", kindPion, "", s), e.sel("forwarding", kindGatewayPion, "", s)
	add(ratioRow(fmt.Sprintf("Forwarding CPU per 100 B request+response, %d DTLS 1.3 sessions, vs the floor", s), gw, fl, cpuReq, 2, "µs", "floor",
		"floor: plain UDP relay, two hops, AES-GCM seal+open ×2"))
	v, ok := mean(vals(pp, cpuReq))
	r := ratioRow(fmt.Sprintf("Forwarding CPU per 100 B request+response, %d DTLS 1.3 sessions, vs raw pion", s), gw, pi, cpuReq, 0.5, "µs", "raw pion",
		"gateway, pion plane "+num(v, ok, "%.1f µs"))
	r.runs += " " + runIDs(pp)
	add(r)
	if sc := e.scale; sc != nil {
		var act []*result
		if r := sc.activeRun; r != nil && r.err == nil && r.sum != nil {
			act = append(act, r)
		}
		fl, pi := e.sel("scale", kindFloor, "", sc.active), e.sel("scale", kindPion, "", sc.active)
		add(ratioRow(fmt.Sprintf("Forwarding CPU per 100 B request+response, %d DTLS 1.3 sessions (%d forwarding), vs the floor", sc.sessions, sc.active),
			act, fl, cpuReq, 2, "µs", fmt.Sprintf("floor (%d devices)", sc.active), "same traffic, same rate"))
		add(ratioRow(fmt.Sprintf("Forwarding CPU per 100 B request+response, %d DTLS 1.3 sessions (%d forwarding), vs raw pion", sc.sessions, sc.active),
			act, pi, cpuReq, 0.5, "µs", fmt.Sprintf("raw pion (%d sessions)", sc.active),
			fmt.Sprintf("raw pion not run with %d sessions: ~100 KB and 4 goroutines each, ~10 GB", sc.sessions)))
		add(e.wakeRow(fmt.Sprintf("First request after %s idle (ciphers released) vs a busy session's, %d sessions (%d waking)", e.sz.wakeAfter, sc.sessions, sc.active), act))
	}
	add(e.wakeRow(fmt.Sprintf("First request after %s idle (ciphers released) vs a busy session's, %d sessions", e.sz.wakeAfter, s), gw))
	t.rows = append(t.rows, e.scaleRows()...)

	// Latency at a low rate.
	for _, q := range []struct {
		name string
		f    func(*result) float64
	}{{"p50", func(r *result) float64 { return r.sum.Requests.Latency.P50 }}, {"p99", func(r *result) float64 { return r.sum.Requests.Latency.P99 }}} {
		gw, pi, d := e.sel("latency", kindGateway, "", 0), e.sel("latency", kindPion, "", 0), e.sel("latency", "direct", "", 0)
		g, okG := mean(valsAll(gw, q.f))
		p, okP := mean(valsAll(pi, q.f))
		dv, okD := mean(valsAll(d, q.f))
		r := row{label: fmt.Sprintf("Request latency %s, %d sessions at %.0f/s (client-side)", q.name, e.sz.latSessions, e.sz.latRate),
			gw: num(g, okG, "%.3f ms"), other: "raw pion " + num(p, okP, "%.3f ms"), ratio: "—", target: "—", met: "—",
			ref: "direct UDP to the backend " + num(dv, okD, "%.3f ms"), runs: runIDs(gw, pi, d)}
		if okG && okD {
			r.ratio = fmt.Sprintf("gw adds %+.3f ms", g-dv)
		}
		add(r)
	}
	for _, m := range []struct{ mix, label string }{{"1.3-dhe", "DTLS 1.3"}, {"1.2-ccm8", "DTLS 1.2"}} {
		n := e.sz.memSessions
		gw, pi, pp, lc := e.sel("memory", kindGateway, m.mix, 0), e.sel("memory", kindPion, m.mix, 0), e.sel("memory", kindGatewayPion, m.mix, 0), e.sel("memory", kindLibcoap, m.mix, 0)
		g, okG := mean(vals(gw, rssKB))
		p, okP := mean(vals(pi, rssKB))
		v, ok := mean(vals(pp, rssKB))
		ref := "gateway, pion plane " + num(v, ok, "%.1f KB")
		if m.mix == "1.2-ccm8" {
			v, ok := mean(vals(lc, rssKB))
			ref += "; libcoap+GnuTLS " + num(v, ok, "%.1f KB")
		}
		r := row{label: fmt.Sprintf("Idle session RSS, %s, %d sessions", m.label, n),
			gw: num(g, okG, "%.1f KB"), other: "raw pion " + num(p, okP, "%.1f KB"), target: "—", ratio: "n/a", met: "—", ref: ref, runs: runIDs(gw, pi, pp, lc)}
		if okG && okP && p > 0 {
			r.ratio = fmt.Sprintf("%.2f×", g/p)
		}
		add(r)
		threads := func(kind string) string {
			for _, res := range e.sel("memory", kind, m.mix, 0) {
				if res.sum.Server != nil {
					s := fmt.Sprintf("%d threads", res.sum.Server.ThreadsAfter)
					if g := res.extra["goroutines"]; g != "" {
						s += ", " + g + " goroutines"
					}
					return s
				}
			}
			return "n/a"
		}
		ref = "gateway, pion plane " + threads(kindGatewayPion)
		if m.mix == "1.2-ccm8" {
			ref += "; libcoap " + threads(kindLibcoap)
		}
		add(row{label: fmt.Sprintf("  server threads/goroutines at %d %s sessions", n, m.label),
			gw: threads(kindGateway), other: "raw pion " + threads(kindPion), ratio: "—", target: "—", met: "—", ref: ref, runs: runIDs(gw, pi, pp, lc)})
	}
	for _, r := range e.sel("fleet", kindGateway, "", 0) {
		s := r.sum
		cpu := "n/a"
		if s.Server != nil {
			cpu = fmt.Sprintf("%.0f µs CPU/request", s.Server.CPUPerRequestUS)
		}
		add(row{
			label: fmt.Sprintf("LwM2M fleet: %d devices, 60/20/20 mix, 150/s connect, 1%%/s churn, %.0f msg/s", r.sessions, e.sz.fleetRate),
			gw: fmt.Sprintf("%d/%d hs ok, %d/%d req ok, p50 %.2f ms p99 %.2f ms, %s", s.Handshakes.OK, s.Handshakes.OK+s.Handshakes.Failed,
				s.Requests.OK, s.Requests.OK+s.Requests.Failed, s.Requests.Latency.P50, s.Requests.Latency.P99, cpu),
			other: "—", ratio: "—", target: "—", met: "—", ref: "—", runs: runIDs([]*result{r})})
	}
	t.rows = append(t.rows, e.floodRows()...)
	return t
}

// valsAll is vals without the need for server figures (client-side).
func valsAll(rs []*result, f func(*result) float64) []float64 {
	out := make([]float64, 0, len(rs))
	for _, r := range rs {
		out = append(out, f(r))
	}
	return out
}

// wakeRow compares the server CPU of a request after the idle time with
// that of a request of the same runs' steady phase.
func (e *env) wakeRow(label string, rs []*result) row {
	var withWake []*result
	for _, r := range rs {
		if r.sum.Server != nil && r.sum.Server.WakeRequests > 0 {
			withWake = append(withWake, r)
		}
	}
	w, okW := mean(vals(withWake, cpuWake))
	b, okB := mean(vals(withWake, cpuReq))
	r := row{label: label, gw: num(w, okW, "%.1f µs"), other: "busy " + num(b, okB, "%.1f µs"), ratio: "n/a",
		target: "≤ 1.50×", met: "n/a", ref: "one request per session, at the forwarding rate", runs: runIDs(withWake)}
	if okW && okB && b > 0 {
		r.ratio = fmt.Sprintf("%.2f×", w/b)
		r.met = yesNo(w/b <= 1.5)
	}
	return r
}

var header = row{"Measurement (server CPU time per operation; memory per session)", "gateway (lean plane)", "compared with", "ratio", "target", "met", "also measured", "runs"}

func (t table) writeText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range append([]row{header}, t.rows...) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.label, r.gw, r.other, r.ratio, r.target, r.met, r.ref)
	}
	_ = tw.Flush()
}

func (t table) markdown() string {
	var b strings.Builder
	for i, r := range append([]row{header}, t.rows...) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.label, r.gw, r.other, r.ratio, r.target, r.met, r.ref, r.runs)
		if i == 0 {
			b.WriteString("|---|---|---|---|---|---|---|---|\n")
		}
	}
	return b.String()
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func commandLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func (e *env) libcoapVersion() string {
	if e.libcoap == "" {
		return "not installed"
	}
	out, _ := exec.Command(e.libcoap, "-?").CombinedOutput()
	var parts []string
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.Contains(line, "coap-server-gnutls v") || strings.HasPrefix(line, "TLS Library:") {
			parts = append(parts, strings.TrimSpace(line))
		}
	}
	return strings.Join(parts, "; ")
}
