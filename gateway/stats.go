package gateway

import (
	"sort"
	"sync"
	"sync/atomic"
)

// Stats is a snapshot of the data-path counters. No identities (R9).
type Stats struct {
	Sessions           int               // established sessions and handshakes in progress
	Established        int64             // established sessions now
	Handshaking        int64             // handshakes in progress now
	Embryonic          int64             // handshakes whose cookie has not come back yet
	HandshakesOK       uint64            // handshakes completed
	Relayed            uint64            // datagrams relayed to the replica that owns their session
	Takeovers          uint64            // sessions taken over from a replica whose lease ran out
	SnapshotsWritten   uint64            // session snapshots written (checkpoints, handoff)
	SnapshotsRestored  uint64            // sessions restored from snapshots at start
	RestoreRefused     map[string]uint64 // snapshots not restored, by reason
	HandshakesFailed   map[string]uint64 // failed handshakes by reason
	DatagramsToBackend uint64
	DatagramsToDevice  uint64
	BytesToBackend     uint64
	BytesToDevice      uint64
	Dropped            uint64 // datagrams dropped before reaching a session
	UpstreamErrors     uint64
	// Refused counts device datagrams the gateway did not forward, by
	// rule: "L1", "L2", "rate", or "CoAP" for datagrams that are not CoAP.
	Refused map[string]uint64
}

// dropReason says why a datagram never reached a session.
type dropReason uint8

const (
	dropOversize      dropReason = iota // larger than MaxDatagram, or empty
	dropUnknownCID                      // a CID record naming no session
	dropNotHello                        // no session and not a ClientHello
	dropQueueFull                       // the session's inbound queue was full
	dropNoSession                       // a session could not be started
	dropSessionLimit                    // MaxSessions reached
	dropRateLimited                     // the source IP's HandshakeRate exceeded
	dropEvicted                         // an embryonic handshake evicted (counts handshakes)
	dropNoCommonSuite                   // a ClientHello offering none of our suites (answered handshake_failure)
	dropNoExtensions                    // a ClientHello without extensions (answered handshake_failure)
	dropShed                            // a ClientHello shed: the handshake pool was full
	dropReplay                          // a record already seen (replay window)
	dropBadRecord                       // a record that does not authenticate or parse
	dropReserve                         // a record above the session's persisted sequence reservation, or fenced (checkpoint.go)
	dropTakingOver                      // a record of a dead replica's session, while it is taken over
	dropBadLink                         // a replicas' link datagram that does not open, or is stale
	dropPrefixLimited                   // the source prefix's PrefixHandshakeRate exceeded
	dropStaleHello                      // a ClientHello answering a cookie with no handshake in progress
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{"oversize", "unknown_cid", "not_client_hello", "queue_full", "no_session",
	"session_limit", "rate_limited", "evicted_embryonic", "no_common_suite", "no_extensions", "shed", "replay", "bad_record", "reserve", "taking_over", "bad_link",
	"prefix_rate_limited", "stale_hello"}

// traffic counts one backend's datagrams and bytes, both ways.
type traffic struct {
	dgramsUp, dgramsDown, bytesUp, bytesDown atomic.Uint64
}

type counters struct {
	relayed           atomic.Uint64 // datagrams relayed to their owning replica
	takeovers         atomic.Uint64 // sessions taken over from a dead replica
	fences            atomic.Uint64 // times this replica lost its lease
	snapshotsWritten  atomic.Uint64
	snapshotsRestored atomic.Uint64
	checkpointErrors  atomic.Uint64
	restoreRefusals   sync.Map // reason -> *atomic.Uint64

	handshakesOK   atomic.Uint64
	upstreamErrors atomic.Uint64
	dropped        [numDropReasons]atomic.Uint64
	backends       map[string]*traffic // fixed at New: no lock on the data path

	mu      sync.Mutex
	okBy    map[handshakeKind]uint64 // by version and mode
	failed  map[string]uint64
	refusal map[string]uint64
}

type handshakeKind struct{ version, mode string }

func (c *counters) init(backends map[string]string) {
	c.backends = make(map[string]*traffic, len(backends))
	for name := range backends {
		c.backends[name] = new(traffic)
	}
}

func (c *counters) drop(r dropReason) { c.dropped[r].Add(1) }

// restoreRefused counts a snapshot that could not be restored, by reason.
func (c *counters) restoreRefused(reason string) {
	v, _ := c.restoreRefusals.LoadOrStore(reason, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
}

func (c *counters) refused(rule string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refusal == nil {
		c.refusal = make(map[string]uint64)
	}
	c.refusal[rule]++
}

func (c *counters) handshakeOK(version, mode string) {
	c.handshakesOK.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.okBy == nil {
		c.okBy = make(map[handshakeKind]uint64)
	}
	c.okBy[handshakeKind{version, mode}]++
}

func (c *counters) handshakeFailed(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == nil {
		c.failed = make(map[string]uint64)
	}
	c.failed[reason]++
}

func (c *counters) toBackend(backend string, n int) {
	if t := c.backends[backend]; t != nil {
		t.dgramsUp.Add(1)
		t.bytesUp.Add(uint64(n))
	}
}

func (c *counters) toDevice(backend string, n int) {
	if t := c.backends[backend]; t != nil {
		t.dgramsDown.Add(1)
		t.bytesDown.Add(uint64(n))
	}
}

// Stats returns a snapshot of the counters.
func (srv *Server) Stats() Stats {
	c := &srv.stats
	established, handshaking := srv.table.counts()
	st := Stats{
		Sessions:          established + handshaking,
		Established:       int64(established),
		Handshaking:       int64(handshaking),
		Embryonic:         int64(srv.admission.embryos()),
		HandshakesOK:      c.handshakesOK.Load(),
		Relayed:           c.relayed.Load(),
		Takeovers:         c.takeovers.Load(),
		SnapshotsWritten:  c.snapshotsWritten.Load(),
		SnapshotsRestored: c.snapshotsRestored.Load(),
		RestoreRefused:    map[string]uint64{},
		UpstreamErrors:    c.upstreamErrors.Load(),
		HandshakesFailed:  map[string]uint64{},
		Refused:           map[string]uint64{},
	}
	for i := range c.dropped {
		st.Dropped += c.dropped[i].Load()
	}
	for _, t := range c.backends {
		st.DatagramsToBackend += t.dgramsUp.Load()
		st.DatagramsToDevice += t.dgramsDown.Load()
		st.BytesToBackend += t.bytesUp.Load()
		st.BytesToDevice += t.bytesDown.Load()
	}
	c.restoreRefusals.Range(func(k, v any) bool {
		st.RestoreRefused[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	c.mu.Lock()
	for k, v := range c.failed {
		st.HandshakesFailed[k] = v
	}
	for k, v := range c.refusal {
		st.Refused[k] = v
	}
	c.mu.Unlock()
	return st
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
