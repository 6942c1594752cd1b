package gateway

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/record"
	"github.com/pion/dtls/v4"
	"go.uber.org/zap"
)

// leanPlane protects a session's records with the gateway's own record
// layer (internal/record), taken over from pion's exported state at the
// end of the handshake. It has no goroutine: the poller's event loop calls
// open (a device's datagram) and send (a backend's answer), the gateway's
// own replies call send too, the sweeper calls tick. Every method runs
// under the session's mu.
type leanPlane struct {
	rec      *record.Conn
	in       record.Datagram // reused across open calls (under s.mu)
	released bool            // ciphers dropped while idle (record.Conn.Release)
}

// releaseAfter is how long a session stays idle before its instantiated
// ciphers are dropped: a busy session keeps them (0 allocations per record),
// a sleeping one costs only its raw keys (internal/record measures both).
const releaseAfter = 30 * time.Second

func newLeanPlane(srv *Server, exported dtls.State, keylog []byte, finalFlight [][]byte) (*leanPlane, error) {
	state, err := exported.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("marshal exported state: %w", err)
	}
	rec, err := record.New(record.Params{
		State:       state,
		KeyLog:      keylog,
		FinalFlight: finalFlight,
		CIDLength:   max(srv.cfg.CIDLength, 0),
		Now:         time.Now(),
	})
	if err != nil {
		return nil, err
	}
	return &leanPlane{rec: rec}, nil
}

// sealBufs are the buffers records are sealed into: a record is the payload
// plus at most a header, a CID, padding and a tag.
var sealBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 1<<14+512)
	return &b
}}

// open authenticates and decrypts one datagram from the device and forwards
// its payloads (session.deviceDataLocked). The device's address moves only
// on an authenticated record newer than any before (RFC 9146 §6, RFC 9147
// §9); replies (a resent final flight, ACKs, KeyUpdates) go to the
// session's current address, never to an unauthenticated source. It
// reports whether the device closed the session.
func (p *leanPlane) open(s *session, b []byte, from, via netip.AddrPort) (closed bool) {
	now := time.Now()
	d := &p.in
	s.sweepAfter.Store(0) // the record layer may have work now (ACKs, KeyUpdate)
	err := p.rec.Open(d, b, now)
	if d.Dropped > 0 {
		reason := dropBadRecord
		if errors.Is(d.DropErr, record.ErrReplay) {
			reason = dropReplay
		}
		s.srv.stats.dropped[reason].Add(uint64(d.Dropped))
	}
	if err != nil {
		if d.Dropped > 0 {
			s.srv.sampled.Debug("record dropped", zap.Stringer("remote", from), zap.Error(d.DropErr))
		}
		return false
	}
	p.released = false
	if d.Newer {
		s.movePeerLocked(from)
		s.via = via
	}
	for _, r := range d.Replies {
		s.writeDeviceLocked(r)
	}
	for _, payload := range d.Payloads {
		if reply := s.deviceDataLocked(payload); reply != nil {
			p.send(s, reply)
		}
	}
	return d.Closed
}

// send seals one payload and writes it to the device. A key at its usage
// limit ends the session: DTLS 1.2 needs a new handshake (DTLS 1.3 renews
// its keys by itself long before).
func (p *leanPlane) send(s *session, payload []byte) {
	if s.limit != 0 && p.rec.NextWriteSeq() >= s.limit {
		// Above the persisted reservation (checkpoint.go): held until
		// the checkpoint lands; CoAP retransmits.
		s.srv.stats.drop(dropReserve)
		s.srv.urgeCheckpoint()
		return
	}
	s.sweepAfter.Store(0) // sealing may start a KeyUpdate, and re-arms the cipher release
	bp := sealBufs.Get().(*[]byte)
	out, err := p.rec.Seal((*bp)[:0], payload)
	if err == nil {
		p.released = false
		s.writeDeviceLocked(out)
	}
	*bp = out[:0]
	sealBufs.Put(bp)
	if err != nil {
		s.srv.sampled.Warn("cannot protect a record for the device", zap.String("identity_tag", s.srv.tag(s.identity)), zap.Error(err))
		if errors.Is(err, record.ErrLimit) || errors.Is(err, record.ErrClosed) {
			go s.close("record layer: "+err.Error(), false)
		}
	}
}

// tick runs the record layer's timers (retransmission of our KeyUpdate,
// expiry of late-handshake keys) and releases the ciphers of an idle
// session. It returns when it next has work (unix nanoseconds; the
// far future when none).
func (p *leanPlane) tick(s *session, now time.Time) (next int64) {
	for _, r := range p.rec.Poll(now) {
		s.writeDeviceLocked(r)
	}
	if !p.released && s.idleFor(now) >= releaseAfter {
		p.rec.Release()
		p.released = true
	}
	next = math.MaxInt64
	if !p.released {
		next = s.lastActive.Load() + int64(releaseAfter)
	}
	if t := p.rec.NextPoll(); !t.IsZero() {
		next = min(next, t.UnixNano())
	}
	return next
}

// close ends the record layer, with close_notify when notify.
func (p *leanPlane) close(s *session, notify bool) {
	if !notify {
		return
	}
	bp := sealBufs.Get().(*[]byte)
	if out, err := p.rec.CloseNotify((*bp)[:0]); err == nil {
		s.writeDeviceLocked(out)
		*bp = out[:0]
	}
	sealBufs.Put(bp)
}

// writeDeviceLocked sends one protected datagram to the device's current
// address through the session's listener socket.
func (s *session) writeDeviceLocked(b []byte) {
	if !s.mayWriteLocked() {
		return
	}
	if s.via.IsValid() {
		s.srv.cluster.send(s.via, linkToDevice, s.l.index, s.peer, b)
		return
	}
	if _, err := s.l.pc.WriteToUDPAddrPort(b, s.peer); err != nil {
		s.srv.sampled.Warn("write to device", zap.Stringer("remote", s.peer), zap.Error(err))
	}
}
