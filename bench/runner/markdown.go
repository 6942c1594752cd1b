package main

import (
	"cmp"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// method is the fixed part of the report: how the numbers are made.
const method = `## Method

- **One command**: ` + "`bench/run.sh`" + ` (` + "`make bench`" + `) builds ` + "`cmd/gateway`" + `, ` + "`bench/pionecho`" + `,
  ` + "`bench/floor`" + `, ` + "`cmd/devsim`" + ` and this runner, then runs every measurement below in one go
  (` + "`bench/run.sh --smoke`" + `: the same steps at a tiny size, exit status 0 only if every
  step worked). Every ratio compares figures of this one run.
- **Servers**: the gateway binary (` + "`gateway serve`" + ` with the defaults of
  ` + "`deploy/examples/gateway.yaml`" + ` on loopback: file key store, 8-byte CIDs, X25519,
  one session per identity, default admission limits, ` + "`log.level: info`" + ` as JSON
  to a file, the admin listener with ` + "`pprof: true`" + ` on a free port) on its lean data plane
  (the default) and, as "pion plane", with ` + "`sessions.data_plane: pion`" + ` (the previous data
  path); **raw pion** (` + "`bench/pionecho`" + `: ` + "`dtls.ListenAddr`" + ` with a PSK callback over the
  same key file, the gateway's suites, X25519, 8-byte CIDs, every datagram echoed);
  the **floor** (` + "`bench/floor`" + `: what forwarding cannot avoid: one device-facing UDP
  socket, one connected upstream socket per device to the same echo backend, one epoll
  loop (parked in the Go runtime's poller while idle, as the gateway's), the device
  socket read with recvmmsg (up to 16 datagrams a call) and each upstream socket
  with one read per readiness, one write per datagram, the same raw system calls
  as the gateway's (` + "`internal/udpsock`" + `), and every datagram
  sealed and opened with AES-128-GCM, so two seals and two opens per request and
  response; the gateway opens one and seals one); libcoap's ` + "`coap-server-gnutls`" + `
  (DTLS 1.2 only, ` + "`-k`" + ` one text key for every identity, ` + "`-h \"\"`" + ` no identity hint).
  Every measurement starts its server afresh.
- **Client**: ` + "`devsim --raw`" + ` (the load tool without LwM2M): pion DTLS clients, one
  UDP socket each, offering exactly one suite and, for DTLS 1.3, one PSK
  key-exchange mode, spread over 256 loopback source addresses
  (` + "`--source-ips`" + `: devices have their own addresses, and the gateway admits 200 new
  sessions per second per source IP by default); requests are 100-byte
  confirmable CoAP POSTs. The gateway and the floor forward them to devsim's own UDP
  echo backend, which answers each with a 2.05 piggybacked ACK of the same size; pion
  echo sends the bytes back itself. The floor's devices send the same requests
  without DTLS (` + "`--no-dtls`" + `).
- **CPU**: the server process's CPU time, read by devsim from /proc at the edges of its
  phases: the sum of its threads' run times (/proc/PID/task/TID/schedstat, in
  nanoseconds), or utime+stime (10 ms ticks) if a thread ended in between. Per
  handshake: the connect phase (sessions are kept open, so close costs are not
  counted, but costs that grow with the number of open sessions are). Per request:
  the steady phase, after a warm-up request per device (a forwarding server opens a
  session's upstream socket on its first datagram; ` + "`--warmup`" + `). Client and server share
  the 2 cores, so wall-clock rates (raw numbers) are not comparable across runs; CPU
  time per operation is. The repetitions are interleaved (the gateway, then the
  server it is compared with, then the next repetition); with three or more a CPU
  row shows medians and its ratio is the median of the per-repetition ratios (one
  run disturbed by the machine cannot move it), with fewer the means and the ratio
  of the means (` + "`make bench`" + `: 5 repetitions of each handshake run, 2 of each
  forwarding run).
- **Waking**: after the steady phase the gateway's lean runs stay silent for longer
  than the gateway's cipher release (30 s idle, checked every 5 s by its sweeper),
  then every session sends one request at the same rate (` + "`--wake-after`" + `); the
  server CPU per request of that wave is compared with the steady phase's.
- **Scale**: one gateway holds 100,000 DTLS 1.3 (psk_dhe_ke) sessions from
  several devsim processes (the open-file limit is 20,000 per process here), each
  of at most 16,000 devices over 256 loopback source addresses, on fixed ports below
  the ephemeral range (` + "`--source-port-base`" + `: a socket connected without a bind, as the
  gateway's upstream sockets are, takes a port that no socket uses on any address, so
  100,000 devices on ephemeral ports would leave the gateway none); all but the forwarding
  ones are ` + "`--hold`" + ` devices (after the handshake a device keeps only its socket,
  sends nothing, and sends no close_notify: the gateway holds an idle session). The
  forwarding devices' process waits at ` + "`--wait-signal`" + ` gates while the runner samples
  the gateway: before any session, with every session up and idle, again after 150 s
  (the record layer keeps late-handshake state for 2 minutes; ciphers are released
  after 30 s), and after each forwarding device's first request (its upstream socket
  open). A sample forces a GC (` + "`/debug/pprof/heap?gc=1`" + `, kept as the heap profile),
  then reads ` + "`go_memstats_heap_alloc_bytes`" + `, ` + "`go_goroutines`" + `, ` + "`go_threads`" + `,
  ` + "`gateway_sessions`" + ` and ` + "`process_open_fds`" + ` from the admin /metrics, VmRSS from
  /proc/PID/status, /proc/slabinfo and /proc/net/sockstat. Per-session figures divide
  the growth since the first sample by the established sessions the gateway reports.
  Kernel memory per upstream socket: the growth of the slab caches that grew by at
  least half an object per UDP socket opened, divided by the sockets opened. The
  floor and raw pion forward the same traffic with the forwarding devices only.
- **Memory (10,000 sessions)**: VmRSS of the server after the connect phase and an
  idle settle time (5 s: right after the handshakes, see the scale step for a settled
  figure), minus VmRSS before it, divided by the sessions open; the Go servers (the
  gateway, pion echo) first collect their start-up garbage (` + "`/debug/pprof/heap?gc=1`" + `)
  and their RSS is left to settle, so that the baseline holds no memory the runtime
  gives back while the sessions connect. Threads from
  /proc/PID/status; goroutines from pion echo's pprof listener and from the
  gateway's admin /metrics (` + "`go_goroutines`" + `).
- **Latency**: client-side, from the write of a request to the read of its
  answer, at a low fixed rate; "direct UDP" is the same client without DTLS
  talking straight to the echo backend.
- **Profiles**: CPU profiles (pprof, from the gateway's admin ` + "`/debug/pprof/profile`" + ` and
  pion echo's) during the connect phase of a DTLS 1.3 handshake run and the steady phase
  of a forwarding run, separate runs not counted in the figures; each split by kind of
  work (flat time by function: time in the kernel is sampled in the Go function that made
  the system call); heap profiles from the scale step.
- **Runs**: every row names the devsim runs it comes from (#N, listed under Commands
  with their full command lines; raw numbers per run below).
`

func (e *env) markdown(t table, elapsed time.Duration) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Benchmarks")
	p("")
	p("Generated by `bench/run.sh` (`make bench`) on %s in %s. Do not edit: run it again.", e.started.UTC().Format("2006-01-02 15:04 MST"), elapsed)
	p("")
	p("## Machine")
	p("")
	p("- CPU: %s, `nproc` = %d", cpuModel(), runtime.NumCPU())
	p("- Kernel: %s", commandLine("uname", "-sr"))
	p("- Go: %s", commandLine("go", "version"))
	p("- Code: %s", e.commit)
	p("- libcoap: %s", e.libcoapVersion())
	p("- Load average (1/5/15 min) at start: %s; at end: %s (other work on the machine inflates every CPU figure alike; compare ratios)", e.loadStart, loadAvg())
	p("")
	p("## Results")
	p("")
	p("Targets (issue 10) are ratios from this same run: handshake CPU ≤ 1.05 × raw pion per mode; forwarding CPU per request and response ≤ 2 × the floor and ≤ 0.5 × raw pion; the first request after an idle time beyond the cipher release ≤ 1.5 × a busy session's; with 100,000 idle DTLS 1.3 sessions ≤ 2 KB of Go heap and ≤ 6 KB of RSS per session, goroutines and threads ≤ 100 whatever the number of sessions. The flood rows have the absolute targets of issue 12.")
	p("")
	b.WriteString(t.markdown())
	p("")
	if len(e.failed) > 0 {
		p("**Failed steps** (their numbers are missing above):")
		p("")
		for _, f := range e.failed {
			p("- %s", f)
		}
		p("")
	}
	if sc := e.scale; sc != nil && !sc.idle.at.IsZero() {
		p("Scale step: %d sessions from %d devsim processes; %d handshakes timed out or failed and were tried again once from the same address, as a device does (%d failed again: the figures divide by the sessions the gateway reports).",
			int(sc.idle.established), sc.procs, sc.retriedHS, sc.failedHS)
		p("")
	}
	b.WriteString(method)
	b.WriteString(floodMethod)
	p("")
	for _, pr := range e.profiles {
		p("## Profile: %s", pr.title)
		p("")
		if pr.resultID != 0 {
			p("Run #%d.", pr.resultID)
			p("")
		}
		if pr.err != nil {
			p("Not available: %v", pr.err)
			p("")
			continue
		}
		if pr.buckets != "" {
			p("By kind of work (flat): %s.", pr.buckets)
			p("")
		}
		p("```")
		p("%s", pr.top)
		p("```")
		p("")
		if pr.own != "" {
			p("The gateway's own functions (and gob, zap), by time including callees:")
			p("")
			p("```")
			p("%s", pr.own)
			p("```")
			p("")
		}
	}
	b.WriteString(e.floodRaw())
	runs := slices.Clone(e.results)
	slices.SortFunc(runs, func(a, b *result) int { return cmp.Compare(a.id, b.id) })
	p("## Commands")
	p("")
	p("As run (ports and PIDs of this run; `$WORK` is the scratch directory). Servers: `gateway serve --config` (config in the Method section), `pionecho --listen ADDR --keys FILE`, `floor --listen ADDR --backend ADDR`, `coap-server-gnutls -A 127.0.0.1 -p PORT -k KEY -h \"\"` (DTLS on PORT+1).")
	p("")
	p("```")
	for _, r := range runs {
		p("#%d %s: %s", r.id, r.name, r.cmd)
	}
	p("```")
	p("")
	p("## Raw numbers")
	p("")
	p("| run | server | handshakes ok/failed | handshakes/s | server CPU ms (connect) | µs/handshake | requests ok/failed | req/s | server CPU ms (steady) | µs/request | p50 / p99 ms | RSS before → connected | per session | threads | goroutines | µs/wake request | # |")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range runs {
		if r.sum == nil {
			p("| %s | %s | failed: %v |||||||||||||| #%d |", r.name, r.server, r.err, r.id)
			continue
		}
		s := r.sum
		sv := "| n/a | n/a "
		tail := "| n/a | n/a | n/a |"
		cpuSteady, perReq, wake := "n/a", "n/a", "—"
		if v := s.Server; v != nil {
			sv = fmt.Sprintf("| %.0f | %.1f ", v.ConnectCPUms, v.CPUPerHandshakeUS)
			cpuSteady, perReq = fmt.Sprintf("%.0f", v.SteadyCPUms), fmt.Sprintf("%.2f", v.CPUPerRequestUS)
			tail = fmt.Sprintf("| %.1f → %.1f MB | %.1f KB | %d |", mb(v.RSSBefore), mb(v.RSSConnected), v.RSSPerSession/1024, v.ThreadsAfter)
			if v.WakeRequests > 0 {
				wake = fmt.Sprintf("%.2f (%d)", v.CPUPerWakeUS, v.WakeRequests)
			}
		}
		gor := r.extra["goroutines"]
		if gor == "" {
			gor = "—"
		}
		p("| %s | %s | %d/%d | %.0f %s| %d/%d | %.0f | %s | %s | %.3f / %.3f %s %s | %s | #%d |",
			r.name, r.server, s.Handshakes.OK, s.Handshakes.Failed, s.Handshakes.PerSecond, sv,
			s.Requests.OK, s.Requests.Failed, s.Requests.PerSecond, cpuSteady, perReq,
			s.Requests.Latency.P50, s.Requests.Latency.P99, tail, gor, wake, r.id)
	}
	return b.String()
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func mb(v int64) float64 { return float64(v) / (1 << 20) }
