package gateway

import (
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Prometheus metrics. The data path only bumps atomic counters (stats.go);
// Collector turns them into metrics at scrape time, so a scrape costs the
// data path nothing. No label ever carries an identity or an endpoint (R9):
// labels are versions, modes, results, rule IDs, backend names and reasons,
// all from small fixed sets.

var (
	descHandshakes = prometheus.NewDesc("gateway_handshakes_total",
		"DTLS handshakes by version, PSK mode and result (ok, or the failure reason: unknown_identity, bad_key, protocol, policy_R2/R3/R5, store_error, timeout, closed, evicted).",
		[]string{"version", "mode", "result"}, nil)
	descSessions = prometheus.NewDesc("gateway_sessions",
		"Sessions by state: established, or handshaking (a handshake in progress in pion).", []string{"state"}, nil)
	descSnapshots = prometheus.NewDesc("gateway_session_snapshots_total",
		"Session snapshots by event: written (checkpoints and handoff), restored at start.", []string{"event"}, nil)
	descSnapshotRefusals = prometheus.NewDesc("gateway_session_snapshot_refusals_total",
		"Snapshots not restored, by reason (unseal: another KEK or altered; corrupt; stale; superseded; listener; revoked; key_changed; record; store_unavailable: retried).", []string{"reason"}, nil)
	descCheckpointErrors = prometheus.NewDesc("gateway_checkpoint_errors_total",
		"Checkpoints the session store refused; sessions keep their last reservation and retry.", nil, nil)
	descReplica = prometheus.NewDesc("gateway_replica_events_total",
		"Replica events: relayed (a device's datagram relayed to the replica owning its session), takeover (a session taken over from a replica whose lease ran out), fenced (this replica lost its lease).", []string{"event"}, nil)
	descEmbryonic = prometheus.NewDesc("gateway_handshakes_embryonic",
		"Handshakes whose cookie has not been answered yet (Config.MaxEmbryonic caps them).", nil, nil)
	descDatagrams = prometheus.NewDesc("gateway_datagrams_total",
		"Datagrams forwarded, by direction (to_backend, to_device) and backend.", []string{"direction", "backend"}, nil)
	descBytes = prometheus.NewDesc("gateway_bytes_total",
		"Payload bytes forwarded, by direction and backend.", []string{"direction", "backend"}, nil)
	descRefused = prometheus.NewDesc("gateway_refused_total",
		"Device datagrams the gateway answered itself or dropped instead of forwarding, by rule (L1, L2, rate, CoAP, backend_down).", []string{"rule"}, nil)
	descDropped = prometheus.NewDesc("gateway_dropped_datagrams_total",
		"Datagrams dropped before reaching a session, by reason.", []string{"reason"}, nil)
	descAdmitted = prometheus.NewDesc("gateway_handshakes_admitted_total",
		"ClientHellos admitted into a new handshake, by admission class: new (an address never seen), retry (retransmission of a hello shed under pressure), returning (the address completed a handshake recently).",
		[]string{"class"}, nil)
	descLoopReads = prometheus.NewDesc("gateway_event_loop_datagrams_total",
		"Datagrams read from the listeners, by event loop (sessions.event_loops): the kernel spreads devices over the loops by address and port, and this shows how evenly.",
		[]string{"loop"}, nil)
	descUpstreamErrors = prometheus.NewDesc("gateway_upstream_errors_total",
		"Errors writing to or reading from backend sockets.", nil, nil)
)

// loopCounter is a counter one event loop bumps for every datagram, alone
// on its cache line so that loops on different cores do not contend for
// it.
type loopCounter struct {
	atomic.Uint64
	_ [56]byte
}

// failureReasons are the handshake failure reasons the gateway records.
var failureReasons = []string{"unknown_identity", "bad_key", "protocol", "policy_R2", "policy_R3", "policy_R5",
	"store_error", "timeout", "closed", "evicted"}

// refusalRules are the rules behind device datagrams the gateway refuses.
var refusalRules = []string{"L1", "L2", "rate", "CoAP", "backend_down"}

// lookupSeconds is the store lookup latency on the handshake path.
func newLookupHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "gateway_store_lookup_seconds",
		Help:    "Latency of PSK store lookups on the handshake path, errors included.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
}

func newStoreErrors() prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_store_errors_total",
		Help: "PSK store lookups that failed for another reason than an unknown identity (store down, timeout).",
	})
}

// Collector exports the gateway's metrics; register it with a
// prometheus.Registerer.
func (srv *Server) Collector() prometheus.Collector { return collector{srv} }

type collector struct{ srv *Server }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHandshakes, descSessions, descDatagrams, descBytes, descRefused, descDropped, descUpstreamErrors, descEmbryonic, descSnapshots, descSnapshotRefusals, descCheckpointErrors, descReplica, descAdmitted, descLoopReads} {
		ch <- d
	}
	c.srv.lookup.Describe(ch)
	c.srv.storeErrors.Describe(ch)
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	srv := c.srv
	st := &srv.stats
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	st.mu.Lock()
	for k, v := range st.okBy {
		counter(descHandshakes, v, k.version, k.mode, "ok")
	}
	// Known reasons and rules are exported from zero, so the first failure
	// of a kind shows in rate() and alerts can be written against them.
	for _, reason := range failureReasons {
		counter(descHandshakes, st.failed[reason], "", "", reason)
	}
	for reason, v := range st.failed {
		if !slices.Contains(failureReasons, reason) {
			counter(descHandshakes, v, "", "", reason)
		}
	}
	for _, rule := range refusalRules {
		counter(descRefused, st.refusal[rule], rule)
	}
	for rule, v := range st.refusal {
		if !slices.Contains(refusalRules, rule) {
			counter(descRefused, v, rule)
		}
	}
	st.mu.Unlock()
	established, handshaking := srv.table.counts()
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(established), "established")
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(handshaking), "handshaking")
	ch <- prometheus.MustNewConstMetric(descEmbryonic, prometheus.GaugeValue, float64(srv.admission.embryos()))
	for c := range numHelloClasses {
		counter(descAdmitted, srv.admission.admitted[c].Load(), c.String())
	}
	for _, name := range sortedKeys(st.backends) {
		t := st.backends[name]
		counter(descDatagrams, t.dgramsUp.Load(), "to_backend", name)
		counter(descDatagrams, t.dgramsDown.Load(), "to_device", name)
		counter(descBytes, t.bytesUp.Load(), "to_backend", name)
		counter(descBytes, t.bytesDown.Load(), "to_device", name)
	}
	for i := range st.dropped {
		counter(descDropped, st.dropped[i].Load(), dropReasonNames[i])
	}
	for k := range srv.loopReads {
		counter(descLoopReads, srv.loopReads[k].Load(), strconv.Itoa(k))
	}
	counter(descUpstreamErrors, st.upstreamErrors.Load())
	counter(descSnapshots, st.snapshotsWritten.Load(), "written")
	counter(descSnapshots, st.snapshotsRestored.Load(), "restored")
	counter(descCheckpointErrors, st.checkpointErrors.Load())
	counter(descReplica, st.relayed.Load(), "relayed")
	counter(descReplica, st.takeovers.Load(), "takeover")
	counter(descReplica, st.fences.Load(), "fenced")
	st.restoreRefusals.Range(func(k, v any) bool {
		counter(descSnapshotRefusals, v.(*atomic.Uint64).Load(), k.(string))
		return true
	})
	srv.lookup.Collect(ch)
	srv.storeErrors.Collect(ch)
}
