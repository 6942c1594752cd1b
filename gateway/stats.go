package gateway

import (
	"sync"
	"sync/atomic"
)

// Stats is a snapshot of the data-path counters. No identities (R9).
type Stats struct {
	Sessions           int               // live sessions, established or handshaking
	Established        int64             // established sessions now
	HandshakesOK       uint64            // handshakes completed
	HandshakesFailed   map[string]uint64 // failed handshakes by reason
	DatagramsToBackend uint64
	DatagramsToDevice  uint64
	BytesToBackend     uint64
	BytesToDevice      uint64
	Dropped            uint64 // datagrams dropped before reaching a session
	UpstreamErrors     uint64
	// Refused counts device datagrams the gateway did not forward, by
	// rule: "L1", "L2", or "CoAP" for datagrams that are not valid CoAP.
	Refused map[string]uint64
}

type counters struct {
	established    atomic.Int64
	handshakesOK   atomic.Uint64
	dgramsUp       atomic.Uint64
	dgramsDown     atomic.Uint64
	bytesUp        atomic.Uint64
	bytesDown      atomic.Uint64
	dropped        atomic.Uint64
	upstreamErrors atomic.Uint64

	mu      sync.Mutex
	failed  map[string]uint64
	refusal map[string]uint64
}

func (c *counters) refused(rule string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refusal == nil {
		c.refusal = make(map[string]uint64)
	}
	c.refusal[rule]++
}

func (c *counters) handshakeOK() {
	c.handshakesOK.Add(1)
	c.established.Add(1)
}

func (c *counters) sessionClosed() { c.established.Add(-1) }

func (c *counters) handshakeFailed(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == nil {
		c.failed = make(map[string]uint64)
	}
	c.failed[reason]++
}

func (c *counters) toBackend(n int) {
	c.dgramsUp.Add(1)
	c.bytesUp.Add(uint64(n))
}

func (c *counters) toDevice(n int) {
	c.dgramsDown.Add(1)
	c.bytesDown.Add(uint64(n))
}

// Stats returns a snapshot of the counters.
func (srv *Server) Stats() Stats {
	c := &srv.stats
	st := Stats{
		Sessions:           srv.table.len(),
		Established:        c.established.Load(),
		HandshakesOK:       c.handshakesOK.Load(),
		DatagramsToBackend: c.dgramsUp.Load(),
		DatagramsToDevice:  c.dgramsDown.Load(),
		BytesToBackend:     c.bytesUp.Load(),
		BytesToDevice:      c.bytesDown.Load(),
		Dropped:            c.dropped.Load(),
		UpstreamErrors:     c.upstreamErrors.Load(),
		HandshakesFailed:   map[string]uint64{},
		Refused:            map[string]uint64{},
	}
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
