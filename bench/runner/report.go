package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
)

// row is one line of the result table.
type row struct {
	label, gw, pion, ratio, target, met, ref string
}

type table struct{ rows []row }

// values collects a metric over the successful results that match.
func (e *env) values(group, server, mode string, sessions int, f func(*result) float64) []float64 {
	var out []float64
	for _, r := range e.results {
		if r.err != nil || r.sum == nil || r.group != group || r.server != server ||
			(mode != "" && r.mode != mode) || (sessions != 0 && r.sessions != sessions) {
			continue
		}
		out = append(out, f(r))
	}
	return out
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

func cpuHS(r *result) float64  { return r.sum.Server.CPUPerHandshakeUS }
func cpuReq(r *result) float64 { return r.sum.Server.CPUPerRequestUS }
func rssKB(r *result) float64  { return r.sum.Server.RSSPerSession / 1024 }

func num(v float64, ok bool, format string) string {
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}

// ratioRow compares gateway and pion on one metric against a maximum ratio.
func ratioRow(label string, gw, pion []float64, limit float64, unit string, ref string) row {
	g, okG := mean(gw)
	p, okP := mean(pion)
	r := row{label: label, gw: num(g, okG, "%.1f "+unit), pion: num(p, okP, "%.1f "+unit),
		target: fmt.Sprintf("≤ %.2f×", limit), ratio: "n/a", met: "n/a", ref: ref}
	if okG && okP && p > 0 {
		r.ratio = fmt.Sprintf("%.2f×", g/p)
		r.met = yesNo(g/p <= limit)
	}
	return r
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

// table builds the one table of the report.
func (e *env) table() table {
	var t table
	for _, m := range handshakeModes {
		ref := "—"
		if m.mix == "1.2-ccm8" {
			v, ok := mean(e.values("handshake", kindLibcoap, m.mix, 0, cpuHS))
			ref = "libcoap+GnuTLS " + num(v, ok, "%.1f µs")
		}
		t.rows = append(t.rows, ratioRow("Handshake CPU, "+m.label, e.values("handshake", kindGateway, m.mix, 0, cpuHS),
			e.values("handshake", kindPion, m.mix, 0, cpuHS), 1.1, "µs", ref))
	}
	for _, s := range e.sz.fwdSessions {
		t.rows = append(t.rows, ratioRow(fmt.Sprintf("Forwarding CPU per 100 B req+resp, %d DTLS 1.3 sessions", s),
			e.values("forwarding", kindGateway, "", s, cpuReq), e.values("forwarding", kindPion, "", s, cpuReq), 1.2, "µs", "—"))
	}
	// Latency at a low rate.
	for _, q := range []struct {
		name string
		f    func(*result) float64
	}{{"p50", func(r *result) float64 { return r.sum.Requests.Latency.P50 }}, {"p99", func(r *result) float64 { return r.sum.Requests.Latency.P99 }}} {
		g, okG := mean(e.values("latency", kindGateway, "", 0, q.f))
		p, okP := mean(e.values("latency", kindPion, "", 0, q.f))
		d, okD := mean(e.values("latency", "direct", "", 0, q.f))
		r := row{label: fmt.Sprintf("Request latency %s, %d sessions at %.0f/s (client-side)", q.name, e.sz.latSessions, e.sz.latRate),
			gw: num(g, okG, "%.3f ms"), pion: num(p, okP, "%.3f ms"), ratio: "—", target: "—", met: "—",
			ref: "direct UDP to backend " + num(d, okD, "%.3f ms")}
		if okG && okD {
			r.ratio = fmt.Sprintf("gw adds %+.3f ms", g-d)
		}
		t.rows = append(t.rows, r)
	}
	for _, m := range []struct{ mix, label string }{{"1.3-dhe", "DTLS 1.3"}, {"1.2-ccm8", "DTLS 1.2"}} {
		gw := e.values("memory", kindGateway, m.mix, 0, rssKB)
		pi := e.values("memory", kindPion, m.mix, 0, rssKB)
		g, okG := mean(gw)
		p, okP := mean(pi)
		ref := "—"
		if m.mix == "1.2-ccm8" {
			v, ok := mean(e.values("memory", kindLibcoap, m.mix, 0, rssKB))
			ref = "libcoap+GnuTLS " + num(v, ok, "%.1f KB")
		}
		r := row{label: fmt.Sprintf("Idle session RSS, %s, %d sessions", m.label, e.sz.memSessions),
			gw: num(g, okG, "%.1f KB"), pion: num(p, okP, "%.1f KB"), target: "≤ pion + 8 KB", ratio: "n/a", met: "n/a", ref: ref}
		if okG && okP {
			r.ratio = fmt.Sprintf("%+.1f KB", g-p)
			r.met = yesNo(g-p <= 8)
		}
		t.rows = append(t.rows, r)
		threads := func(kind string) string {
			for _, res := range e.results {
				if res.group == "memory" && res.server == kind && res.mode == m.mix && res.sum != nil && res.sum.Server != nil {
					s := fmt.Sprintf("%d threads", res.sum.Server.ThreadsAfter)
					if g := res.extra["goroutines"]; g != "" {
						s += ", " + g + " goroutines"
					}
					return s
				}
			}
			return "n/a"
		}
		ref = "—"
		if m.mix == "1.2-ccm8" {
			ref = "libcoap " + threads(kindLibcoap)
		}
		t.rows = append(t.rows, row{label: fmt.Sprintf("  server threads/goroutines at %d %s sessions", e.sz.memSessions, m.label),
			gw: threads(kindGateway), pion: threads(kindPion), ratio: "—", target: "—", met: "—", ref: ref})
	}
	for _, r := range e.results {
		if r.group != "fleet" || r.sum == nil {
			continue
		}
		s := r.sum
		cpu := "n/a"
		if s.Server != nil {
			cpu = fmt.Sprintf("%.0f µs CPU/request", s.Server.CPUPerRequestUS)
		}
		t.rows = append(t.rows, row{
			label: fmt.Sprintf("LwM2M fleet: %d devices, 60/20/20 mix, 150/s connect, 1%%/s churn, %.0f msg/s", r.sessions, e.sz.fleetRate),
			gw: fmt.Sprintf("%d/%d hs ok, %d/%d req ok, p50 %.2f ms p99 %.2f ms, %s", s.Handshakes.OK, s.Handshakes.OK+s.Handshakes.Failed,
				s.Requests.OK, s.Requests.OK+s.Requests.Failed, s.Requests.Latency.P50, s.Requests.Latency.P99, cpu),
			pion: "—", ratio: "—", target: "—", met: "—", ref: "—"})
	}
	t.rows = append(t.rows, e.floodRows()...)
	return t
}

var header = row{"Measurement (server CPU time per operation)", "gateway", "raw pion", "ratio", "target", "met", "reference"}

func (t table) writeText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range append([]row{header}, t.rows...) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.label, r.gw, r.pion, r.ratio, r.target, r.met, r.ref)
	}
	_ = tw.Flush()
}

func (t table) markdown() string {
	var b strings.Builder
	for i, r := range append([]row{header}, t.rows...) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.label, r.gw, r.pion, r.ratio, r.target, r.met, r.ref)
		if i == 0 {
			b.WriteString("|---|---|---|---|---|---|---|\n")
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
