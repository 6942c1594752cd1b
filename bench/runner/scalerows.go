package main

import (
	"fmt"
	"strings"
)

// scaleRows are the memory rows of the scale step: per idle session (Go
// heap after GC, RSS), goroutines and threads, what a forwarding session
// adds (its upstream socket: heap, RSS, kernel memory, a file), and the
// gateway's CPU while every session idles.
func (e *env) scaleRows() []row {
	sc := e.scale
	if sc == nil || sc.idle.at.IsZero() {
		return []row{{label: "100,000-session memory rows", gw: "n/a (the scale step failed; see Failed steps)", other: "—", ratio: "—", target: "—", met: "n/a", ref: "—", runs: "—"}}
	}
	var runs []*result
	for _, r := range append(append([]*result{}, sc.holders...), sc.activeRun) {
		if r != nil {
			runs = append(runs, r)
		}
	}
	ids := runIDs(runs)
	b, f, i := sc.base, sc.fresh, sc.idle
	per := func(after, before float64, n float64) float64 { return (after - before) / n }
	heapIdle := per(i.heap, b.heap, i.established)
	heapFresh := per(f.heap, b.heap, f.established)
	rssIdle := per(float64(i.rss), float64(b.rss), i.established) / 1024
	rssFresh := per(float64(f.rss), float64(b.rss), f.established) / 1024
	n := int(i.established)
	rows := []row{
		{label: fmt.Sprintf("Go heap per idle DTLS 1.3 session after GC, %d sessions", n),
			gw: fmt.Sprintf("%.0f B", heapIdle), other: "—", ratio: "—", target: "≤ 2048 B", met: yesNo(heapIdle <= 2048),
			ref: fmt.Sprintf("%s idle; right after the handshakes %.0f B; gateway before any session %.1f MB (%d keys loaded)",
				e.sz.scaleIdle, heapFresh, b.heap/(1<<20), sc.sessions), runs: ids},
		{label: fmt.Sprintf("RSS per idle DTLS 1.3 session, %d sessions", n),
			gw: fmt.Sprintf("%.2f KB", rssIdle), other: "—", ratio: "—", target: "≤ 6 KB", met: yesNo(rssIdle <= 6),
			ref: fmt.Sprintf("%s idle; right after the handshakes %.2f KB; gateway before any session %.1f MB", e.sz.scaleIdle, rssFresh, float64(b.rss)/(1<<20)), runs: ids},
		{label: fmt.Sprintf("Goroutines / threads, %d sessions", n),
			gw: fmt.Sprintf("%.0f / %.0f", i.goroutines, i.threads), other: fmt.Sprintf("0 sessions: %.0f / %.0f", b.goroutines, b.threads), ratio: "—",
			target: "≤ 100, independent of the sessions", met: yesNo(i.goroutines <= 100 && i.threads <= 100 && i.goroutines <= b.goroutines+5),
			ref: fmt.Sprintf("forwarding %d: %.0f / %.0f", sc.active, sc.fwd.goroutines, sc.fwd.threads), runs: ids},
	}
	if !sc.fwd.at.IsZero() {
		a := float64(sc.active)
		dHeap := per(sc.fwd.heap, i.heap, a)
		dRSS := per(float64(sc.fwd.rss), float64(i.rss), a) / 1024
		rows = append(rows, row{label: fmt.Sprintf("Forwarding DTLS 1.3 session (its upstream socket open), %d of the %d: Go heap / RSS per session", sc.active, n),
			gw: fmt.Sprintf("%.0f B / %.2f KB", heapIdle+dHeap, rssIdle+dRSS), other: "—", ratio: "—", target: "—", met: "—",
			ref: fmt.Sprintf("%+.0f B heap, %+.2f KB RSS over an idle session", dHeap, dRSS), runs: ids})
		// The sockets opened are the gateway's new file descriptors;
		// sockstat counts the whole machine's.
		opened := int64(sc.fwd.openFDs - i.openFDs)
		kernel, caches := slabGrowth(i.slab, sc.fwd.slab, opened)
		k := "n/a (/proc/slabinfo needs root)"
		if caches != nil {
			k = fmt.Sprintf("%.2f KB", kernel/1024)
		}
		note := ""
		if strings.Contains(strings.Join(caches, " "), "proc_inode_cache") {
			note = "; proc_inode_cache and one of the dentries are /proc/PID/fd entries, made when something lists the open files (the process collector of /metrics does at every scrape) and reclaimable"
		}
		rows = append(rows, row{label: "Kernel memory per upstream UDP socket (slab objects)",
			gw: k, other: "—", ratio: "—", target: "—", met: "—",
			ref: fmt.Sprintf("%d sockets opened; slab caches that grew by half an object per socket or more, machine-wide: %s%s (UDP receive-memory accounting, both ends of loopback: %+d pages)",
				opened, strings.Join(caches, ", "), note, sc.fwd.udpMemPages-i.udpMemPages), runs: ids})
		if caches != nil {
			// What deploy/ sizes memory limits by (deploy/sizing_test.go
			// reads this row): a session once it has forwarded, with its
			// upstream socket's kernel memory, and the gateway's own RSS.
			rows = append(rows, row{label: fmt.Sprintf("Sizing: memory per session that forwards (RSS and the kernel memory of its upstream socket), %d sessions", n),
				gw: fmt.Sprintf("%.1f KB", rssIdle+dRSS+kernel/1024), other: "—", ratio: "—", target: "—", met: "—",
				ref: fmt.Sprintf("gateway before any session %.1f MB (%d keys loaded); an idle session %.1f KB", float64(b.rss)/(1<<20), sc.sessions, rssIdle), runs: ids})
		}
		rows = append(rows, row{label: "Open files per forwarding session",
			gw: fmt.Sprintf("%.2f", per(sc.fwd.openFDs, i.openFDs, a)), other: "—", ratio: "—", target: "—", met: "—",
			ref: fmt.Sprintf("%.0f open files with %d idle sessions", i.openFDs, n), runs: ids})
	}
	if d := i.at.Sub(f.at).Seconds(); d > 0 {
		cpu := float64(i.cpu-f.cpu) / 1e6 / d
		rows = append(rows, row{label: fmt.Sprintf("Gateway CPU while %d sessions idle", n),
			gw: fmt.Sprintf("%.1f ms/s", cpu), other: "—", ratio: "—", target: "—", met: "—",
			ref: fmt.Sprintf("over %.0f s (the sweeper, timers, GC)", d), runs: ids})
	}
	return rows
}
