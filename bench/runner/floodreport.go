package main

import (
	"fmt"
	"strings"
	"time"
)

// floodRows are the flood scenario's rows of the result table: the targets
// of issue 12 for each shape.
func (e *env) floodRows() []row {
	var rows []row
	for _, r := range e.floods {
		head := fmt.Sprintf("Flood %.0f spoofed ClientHellos/s × %s, %s:", r.rate, r.dur, r.label)
		if r.returning == nil {
			rows = append(rows, row{label: head + " failed", gw: fmt.Sprint(r.err), other: "—", ratio: "—", target: "—", met: "n/a", ref: "—"})
			continue
		}
		pct := func(n, total int) (string, float64) {
			if total == 0 {
				return "no attempts", 0
			}
			p := 100 * float64(n) / float64(total)
			return fmt.Sprintf("%.1f%% (%d/%d)", p, n, total), p
		}
		ms := func(d time.Duration) string {
			if d < 0 {
				return "∞"
			}
			return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
		}
		n, total := r.returning.within(3 * time.Second)
		s, p := pct(n, total)
		rows = append(rows, row{label: head + " returning devices' handshakes within 3 s", gw: s, other: "—", ratio: "—",
			target: "≥ 95%", met: yesNo(total > 0 && p >= 95),
			ref: fmt.Sprintf("p50 %s, p95 %s, %d failed %v", ms(r.returning.quantile(.5)), ms(r.returning.quantile(.95)), r.returning.failed, r.returning.errs)})
		n, total = r.fresh.within(10 * time.Second)
		s, p = pct(n, total)
		rows = append(rows, row{label: head + " new devices' handshakes within 10 s", gw: s, other: "—", ratio: "—",
			target: "≥ 90%", met: yesNo(total > 0 && p >= 90),
			ref: fmt.Sprintf("p50 %s, p90 %s, %d failed %v", ms(r.fresh.quantile(.5)), ms(r.fresh.quantile(.9)), r.fresh.failed, r.fresh.errs)})
		est, met := "n/a", "n/a"
		if s := r.established; s != nil {
			est = fmt.Sprintf("%d lost of %d requests", s.Requests.Failed, s.Requests.OK+s.Requests.Failed)
			met = yesNo(s.Requests.Failed == 0 && s.Requests.OK > 0)
		}
		rows = append(rows, row{label: head + fmt.Sprintf(" %d established devices, a request/s each (CoAP retransmission)", e.sz.floodEstablished),
			gw: est, other: "—", ratio: "—", target: "0 lost", met: met, ref: "—"})
		rec := "not within " + r.after.String()
		if r.recovered >= 0 {
			rec = "in " + r.recovered.Round(time.Second).String()
		}
		rows = append(rows, row{label: head + " gateway RSS before → peak → " + r.after.String() + " after",
			gw: fmt.Sprintf("%.0f → %.0f → %.0f MB", mb(r.rssPre), mb(r.rssPeak), mb(r.rssAfter)), other: "—", ratio: "—",
			target: "peak ≤ 512 MB; ≤ 1.2 × before within 60 s", met: yesNo(r.rssPeak <= 512<<20 && r.recovered >= 0 && r.recovered <= 60*time.Second),
			ref: "back ≤ 1.2 × before " + rec})
		bound := r.gorPre + 4*float64(r.maxHandshakes)
		rows = append(rows, row{label: head + " gateway goroutines before → peak",
			gw: fmt.Sprintf("%.0f → %.0f", r.gorPre, r.gorPeak), other: "—", ratio: "—",
			target: "≤ before + 4 × max_handshakes", met: yesNo(r.gorPeak > 0 && r.gorPeak <= bound),
			ref: fmt.Sprintf("bound %.0f (max_handshakes %d)", bound, r.maxHandshakes)})
		perHello := "n/a"
		if r.flood.Hellos > 0 {
			perHello = fmt.Sprintf("%.1f µs", float64(r.cpu.Microseconds())/float64(r.flood.Hellos))
		}
		rows = append(rows, row{label: head + " gateway CPU per spoofed ClientHello (all work during the flood)",
			gw: perHello, other: "—", ratio: "—", target: "—", met: "—",
			ref: fmt.Sprintf("%.0f%% of one core; %.0f hellos/s sent (%s socket)", 100*r.cpu.Seconds()/r.dur.Seconds(), r.flood.HellosPerS, r.flood.Socket)})
	}
	return rows
}

// floodMethod describes the scenario for the report.
const floodMethod = `- **Flood** (issue 12): ` + "`devsim --flood RATE --flood-repeat 1|2`" + ` sends real pion
  DTLS 1.3 and 1.2 ClientHellos, varied in their random, key share and binder, each
  from a new spoofed source in 127.0.0.0/8 (raw IPv4 socket as root; a UDP socket
  per hello otherwise), never answering the cookie; with ` + "`--flood-repeat 2`" + ` each is
  sent twice back to back. Meanwhile ` + "`devsim`" + ` (LwM2M mode) keeps 1,000
  established devices sending an Update a second each (CoAP retransmission:
  ACK_TIMEOUT 2 s, MAX_RETRANSMIT 4), and the runner itself runs 20 returning
  devices (they completed a handshake from 127.0.0.1 before the flood and
  reboot in a loop from the same port: handshake, Register, 1 s pause) and 20
  new devices (each attempt from a loopback address never used before:
  handshake, Register, close, 1 s pause), all with pion's normal ClientHello
  retransmission (1 s, doubling). A handshake attempt counts from its first
  ClientHello to its completion; attempts started during the flood count,
  failures count as never completing. The gateway's RSS (/proc) and goroutines
  (its /metrics) are sampled every second; "before" is sampled once every device
  is up, "after" is the end of the watch. CPU per spoofed hello is the
  gateway's CPU during the flood (everything it did: legitimate traffic too)
  divided by the hellos sent. Kernel drops are the machine-wide UDP
  RcvbufErrors delta.
`

// floodRaw is the report's section of raw flood numbers.
func (e *env) floodRaw() string {
	if len(e.floods) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("## Flood runs\n\n")
	b.WriteString("| run | hellos sent (datagrams) | shed | evicted | admitted new / retry / returning | stale hellos | rate-limited (IP / prefix) | kernel UDP drops | gateway CPU | established ok/failed | register errors (new devices) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range e.floods {
		m := r.metrics
		g := func(k string) float64 {
			if m == nil {
				return -1
			}
			return m[k]
		}
		est := "n/a"
		if s := r.established; s != nil {
			est = fmt.Sprintf("%d/%d %v", s.Requests.OK, s.Requests.Failed, s.Errors)
		}
		fmt.Fprintf(&b, "| %s | %d (%d) | %.0f | %.0f | %.0f / %.0f / %.0f | %.0f | %.0f / %.0f | %d | %.1f s | %s | %d |\n",
			r.name, r.flood.Hellos, r.flood.Datagrams,
			g(`gateway_dropped_datagrams_total{reason="shed"}`), g(`gateway_dropped_datagrams_total{reason="evicted_embryonic"}`),
			g(`gateway_handshakes_admitted_total{class="new"}`), g(`gateway_handshakes_admitted_total{class="retry"}`),
			g(`gateway_handshakes_admitted_total{class="returning"}`), g(`gateway_dropped_datagrams_total{reason="stale_hello"}`),
			g(`gateway_dropped_datagrams_total{reason="rate_limited"}`), g(`gateway_dropped_datagrams_total{reason="prefix_rate_limited"}`),
			r.kernelDrops, r.cpu.Seconds(), est, r.registerErrs)
	}
	b.WriteString("\n```\n")
	for _, r := range e.floods {
		fmt.Fprintf(&b, "%s\n%s\n", r.floodCmd, r.estCmd)
	}
	b.WriteString("```\n\n")
	return b.String()
}
