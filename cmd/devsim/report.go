package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
)

// summary is the result of a run; --json prints it as is.
type summary struct {
	Target     string  `json:"target"`
	Mode       string  `json:"mode"` // lwm2m | raw-dtls | raw-udp
	Devices    int     `json:"devices"`
	Mix        string  `json:"mix,omitempty"`
	Pattern    string  `json:"pattern,omitempty"`
	MsgRate    string  `json:"msg_rate"`
	Churn      float64 `json:"churn_per_s"`
	SharedKeys int     `json:"devices_sharing_a_key"`

	Handshakes handshakeSummary `json:"handshakes"`
	Requests   requestSummary   `json:"requests"`
	Reconnects int64            `json:"reconnects"` // churn: disconnect, then a new socket and handshake
	Lifecycle  lifecycleSummary `json:"lifecycle"`
	// Loss is what --loss did to the datagrams of every device, summed.
	Loss    *devsim.LossStats `json:"loss,omitempty"`
	UpAtEnd int64             `json:"devices_up_before_close"`
	Errors  map[string]int64  `json:"errors"`
	// ErrorSamples holds the text of the first error of each kind.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	Server       *serverSummary    `json:"server,omitempty"`
}

type handshakeSummary struct {
	OK     int64 `json:"ok"`
	Failed int64 `json:"failed"`
	// Retried counts failed handshakes the device tried again
	// (--connect-retries); they are not in Failed.
	Retried       int64                 `json:"retried"`
	SuccessRate   float64               `json:"success_rate"`
	ConnectPhaseS float64               `json:"connect_phase_s"`
	ConnectOK     int64                 `json:"connect_phase_ok"`
	PerSecond     float64               `json:"per_second"` // connect phase
	Latency       latency               `json:"latency"`
	ByProfile     map[string]*countPair `json:"by_profile"`
	// ByKind splits handshakes by why they ran: connect (connect phase),
	// churn, reboot, idle (--rehandshake-idle), reconnect (--auto-reconnect).
	ByKind         map[string]opSummary `json:"by_kind"`
	DuringSteadyOK int64                `json:"steady_phase_ok"`
}

// lifecycleSummary counts the device lifecycle events of the run.
type lifecycleSummary struct {
	RebootEvery     string  `json:"reboot_every"`
	RehandshakeIdle string  `json:"rehandshake_idle"`
	AutoReconnect   bool    `json:"auto_reconnect"`
	Sleep           string  `json:"sleep"`
	SleepRate       float64 `json:"sleep_rate_per_s"`
	// Reboots whose handshake completed (the reboot op in requests counts
	// handshake + Register).
	Reboots          int64 `json:"reboots"`
	IdleRehandshakes int64 `json:"idle_rehandshakes"`
	Reconnects       int64 `json:"auto_reconnects"`
	Sleeps           int64 `json:"sleeps"`
	// SessionsLost counts sessions the gateway ended (alert, close_notify);
	// RefusedAfterHandshake those ended before any answer (counted as
	// failed handshakes).
	SessionsLost          int64 `json:"sessions_lost"`
	RefusedAfterHandshake int64 `json:"refused_after_handshake"`
	LostWhileAsleep       int64 `json:"datagrams_lost_while_asleep"`
}

type requestSummary struct {
	OK          int64                `json:"ok"`
	Failed      int64                `json:"failed"`
	SuccessRate float64              `json:"success_rate"`
	SteadyS     float64              `json:"steady_phase_s"`
	SteadyDone  int64                `json:"steady_phase_done"`
	PerSecond   float64              `json:"per_second"` // steady phase, completed
	Late        int64                `json:"late_inflight_full"`
	NoDevice    int64                `json:"not_sent_no_device"`
	Latency     latency              `json:"latency"`
	ByOp        map[string]opSummary `json:"by_op"`
}

type opSummary struct {
	OK      int64   `json:"ok"`
	Failed  int64   `json:"failed"`
	Latency latency `json:"latency"`
}

// serverSummary is what /proc said about --server-pid.
type serverSummary struct {
	PID int `json:"pid"`
	// CPU of the connect phase, and per handshake completed in it.
	ConnectCPUms      float64 `json:"connect_cpu_ms"`
	CPUPerHandshakeUS float64 `json:"cpu_us_per_handshake"`
	// CPU of the steady phase, and per request completed in it (with
	// --churn, it includes the reconnections' handshakes).
	SteadyCPUms     float64 `json:"steady_cpu_ms"`
	CPUPerRequestUS float64 `json:"cpu_us_per_request"`
	// CPU of the wake phase (--wake-after), and per request in it.
	WakeCPUms    float64 `json:"wake_cpu_ms,omitempty"`
	CPUPerWakeUS float64 `json:"cpu_us_per_wake_request,omitempty"`
	WakeRequests int64   `json:"wake_requests,omitempty"`
	// RSS before the connect phase, after it and --settle, after the run.
	RSSBefore     int64 `json:"rss_before_bytes"`
	RSSConnected  int64 `json:"rss_connected_bytes"`
	RSSAfter      int64 `json:"rss_after_bytes"`
	SessionsAtRSS int64 `json:"sessions_at_rss"`
	// RSSPerSession is (RSSConnected-RSSBefore)/SessionsAtRSS.
	RSSPerSession float64 `json:"rss_per_session_bytes"`
	ThreadsBefore int     `json:"threads_before"`
	ThreadsAfter  int     `json:"threads_connected"`
	Error         string  `json:"error,omitempty"`
}

func rate(ok, failed int64) float64 {
	if ok+failed == 0 {
		return 0
	}
	return round(float64(ok)/float64(ok+failed), 4)
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return round(float64(n)/d.Seconds(), 1)
}

// writeText prints the summary for a human.
func (s *summary) writeText(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("target      %s (%s), %d devices, mix %s", s.Target, s.Mode, s.Devices, s.Mix)
	if s.SharedKeys > 0 {
		p("            %d devices share a key with another device", s.SharedKeys)
	}
	h := s.Handshakes
	p("handshakes  ok %d, failed %d, success %.2f%%; connect phase %d in %.2fs = %.1f handshakes/s",
		h.OK, h.Failed, 100*h.SuccessRate, h.ConnectOK, h.ConnectPhaseS, h.PerSecond)
	if h.Retried > 0 {
		p("            %d failed handshakes were tried again (--connect-retries)", h.Retried)
	}
	p("  latency   %s", h.Latency)
	for _, name := range slices.Sorted(maps.Keys(h.ByProfile)) {
		c := h.ByProfile[name]
		p("  %-10s ok %d, failed %d", name, c.OK, c.Failed)
	}
	if len(h.ByKind) > 1 {
		for _, name := range slices.Sorted(maps.Keys(h.ByKind)) {
			k := h.ByKind[name]
			p("  %-10s ok %d, failed %d, %s", name, k.OK, k.Failed, k.Latency)
		}
	}
	r := s.Requests
	p("requests    ok %d, failed %d, success %.2f%%; steady phase %d in %.2fs = %.1f/s (pattern %s, rate %s)",
		r.OK, r.Failed, 100*r.SuccessRate, r.SteadyDone, r.SteadyS, r.PerSecond, s.Pattern, s.MsgRate)
	if r.Late > 0 || r.NoDevice > 0 {
		p("            %d sent late (every --inflight worker busy), %d not sent (no device up)", r.Late, r.NoDevice)
	}
	p("  latency   %s", r.Latency)
	for _, name := range slices.Sorted(maps.Keys(r.ByOp)) {
		o := r.ByOp[name]
		p("  %-10s ok %d, failed %d, %s", name, o.OK, o.Failed, o.Latency)
	}
	if s.Churn > 0 {
		p("churn       %.3g/s of the connected devices: %d reconnections", s.Churn, s.Reconnects)
	}
	if l := s.Lifecycle; l != (lifecycleSummary{RebootEvery: l.RebootEvery, RehandshakeIdle: l.RehandshakeIdle, Sleep: l.Sleep}) {
		p("lifecycle   reboots %d, idle re-handshakes %d, auto-reconnects %d, sleeps %d (%d datagrams lost asleep); sessions lost %d, refused after the handshake %d",
			l.Reboots, l.IdleRehandshakes, l.Reconnects, l.Sleeps, l.LostWhileAsleep, l.SessionsLost, l.RefusedAfterHandshake)
	}
	if l := s.Loss; l != nil {
		p("loss        out: %d datagrams, %d dropped, %d duplicated, %d delayed; in: %d, %d dropped, %d duplicated, %d delayed",
			l.Out.Datagrams, l.Out.Dropped, l.Out.Duplicated, l.Out.Delayed, l.In.Datagrams, l.In.Dropped, l.In.Duplicated, l.In.Delayed)
	}
	if len(s.Errors) == 0 {
		p("errors      none")
	} else {
		p("errors")
		for _, k := range slices.Sorted(maps.Keys(s.Errors)) {
			p("  %-34s %d  (first: %s)", k, s.Errors[k], s.ErrorSamples[k])
		}
	}
	if sv := s.Server; sv != nil {
		if sv.Error != "" {
			p("server      pid %d: %s", sv.PID, sv.Error)
			return
		}
		p("server      pid %d: connect phase %.0f ms CPU = %.1f µs/handshake; steady phase %.0f ms CPU = %.1f µs/request",
			sv.PID, sv.ConnectCPUms, sv.CPUPerHandshakeUS, sv.SteadyCPUms, sv.CPUPerRequestUS)
		if sv.WakeRequests > 0 {
			p("            wake phase %.1f ms CPU = %.1f µs/request (%d requests after --wake-after)", sv.WakeCPUms, sv.CPUPerWakeUS, sv.WakeRequests)
		}
		p("            RSS %.1f MB before, %.1f MB with %d sessions (%.1f KB/session), %.1f MB at the end; threads %d -> %d",
			mb(sv.RSSBefore), mb(sv.RSSConnected), sv.SessionsAtRSS, sv.RSSPerSession/1024, mb(sv.RSSAfter), sv.ThreadsBefore, sv.ThreadsAfter)
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func (l latency) String() string {
	if l.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p95 %s  p99 %s  max %s  (n=%d)", fmtMS(l.P50), fmtMS(l.P95), fmtMS(l.P99), fmtMS(l.Max), l.Count)
}

func fmtMS(v float64) string {
	if v < 1 {
		return fmt.Sprintf("%.0fµs", v*1000)
	}
	return fmt.Sprintf("%.2fms", v)
}

func (s *summary) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// progress prints a live line on stderr until stop is closed: rewritten in
// place on a terminal, one line per period otherwise.
type progress struct {
	w      io.Writer
	tty    bool
	period time.Duration
	st     *stats
	total  int
	start  time.Time
	stop   chan struct{}
	done   sync.WaitGroup
}

func startProgress(w io.Writer, tty bool, period time.Duration, st *stats, total int) *progress {
	p := &progress{w: w, tty: tty, period: period, st: st, total: total, start: time.Now(), stop: make(chan struct{})}
	if period <= 0 {
		return p
	}
	p.done.Add(1)
	go p.loop()
	return p
}

func (p *progress) loop() {
	defer p.done.Done()
	t := time.NewTicker(p.period)
	defer t.Stop()
	last := time.Now()
	var lastHS, lastOps int64
	for {
		select {
		case <-p.stop:
			if p.tty {
				fmt.Fprint(p.w, "\n")
			}
			return
		case now := <-t.C:
			dt := now.Sub(last).Seconds()
			hs, ops := p.st.hsOK.Load(), p.st.opsOK.Load()+p.st.opsFail.Load()
			win := p.st.reqWindow.reset()
			_ = p.st.hsWindow.reset()
			var errs int64
			p.st.mu.Lock()
			for _, n := range p.st.errs {
				errs += n
			}
			p.st.mu.Unlock()
			line := fmt.Sprintf("%6.1fs  up %d/%d  handshakes ok %d failed %d (%.0f/s)  msgs %d (%.0f/s) p50 %s p99 %s  errors %d",
				now.Sub(p.start).Seconds(), p.st.up.Load(), p.total, hs, p.st.hsFail.Load(), float64(hs-lastHS)/dt,
				ops, float64(ops-lastOps)/dt, fmtMS(win.P50), fmtMS(win.P99), errs)
			if p.tty {
				fmt.Fprintf(p.w, "\r%s\033[K", line)
			} else {
				fmt.Fprintln(p.w, line)
			}
			last, lastHS, lastOps = now, hs, ops
		}
	}
}

func (p *progress) end() {
	close(p.stop)
	p.done.Wait()
}

// joinShares prints a pattern or mix back.
func joinShares(names []string, weights []int) string {
	parts := make([]string, len(names))
	for i := range names {
		parts[i] = fmt.Sprintf("%s=%d", names[i], weights[i])
	}
	return strings.Join(parts, ",")
}
