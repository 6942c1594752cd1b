package record

import (
	"fmt"
	"sync"
	"time"
)

// Conn is the record-protection state of one established DTLS session, on
// the server side. It is safe for concurrent use (one mutex): the gateway may
// Open on its listener loop and Seal on its upstream loop.
type Conn struct {
	mu sync.Mutex

	s      *suite
	cidIn  []byte // the CID the gateway issued: the peer puts it in records to us
	cidOut []byte // the CID the peer issued: we put it in records to the peer

	write keys
	read  keys
	prev  *keys // 1.3: the previous read epoch, kept until prevUntil for reordering
	hs    *keys // 1.3: the client handshake traffic keys (epoch 2), until hsUntil

	prevUntil int64 // unix nanoseconds of caller time
	hsUntil   int64

	sendSeq uint16     // 1.3: message_seq of our next handshake message
	recvSeq uint16     // 1.3: message_seq of the next handshake message expected
	hsLazy  bool       // 1.3: hs holds only its secret until a late handshake record needs it (hsKeys)
	ku      *keyUpdate // 1.3: our KeyUpdate awaiting its ACK (RFC 9147 §8)

	flight      [][]byte // 1.2: the server's final flight, until flightUntil
	flightUntil int64
	lastReply   int64 // caller time of the last handshake-layer reply
	lastTime    int64 // the latest caller time seen by Open or Poll

	// handoff is what pion needs beyond the record keys to resume the
	// session (ToPionState): 1.2 master secret ‖ client random ‖ server
	// random; 1.3 the exporter master secret.
	handoff []byte

	closed uint8 // closedByPeer | closedByUs
}

const (
	closedByPeer uint8 = 1 << iota
	closedByUs
)

// keyUpdate is our KeyUpdate in flight: its message_seq, the sequence
// numbers (in the current write epoch) of the records that carried it, and
// its retransmission timer (RFC 9147 §5.8: start at 1 s, double up to 60 s).
type keyUpdate struct {
	msgSeq   uint16
	sent     [4]uint64 // the last transmissions' sequence numbers (a ring)
	nsent    uint8
	next     int64 // next retransmission, unix nanoseconds; 0: not scheduled
	interval int64
}

// Retention and pacing, in caller time. Documented in doc.go.
const (
	hsKeep          = 2 * time.Minute        // 1.3 handshake read keys, 1.2 final flight
	prevKeep        = 30 * time.Second       // 1.3 previous read epoch after a KeyUpdate
	replyInterval   = 500 * time.Millisecond // at most one handshake-layer reply per interval
	retransmitFirst = time.Second
	retransmitMax   = 60 * time.Second
)

// Version reports the DTLS version of the session: 0xfefd (1.2) or 0xfefc
// (1.3), as on the wire.
func (c *Conn) Version() uint16 {
	if c.s.tls13 {
		return 0xfefc
	}
	return 0xfefd
}

// CipherSuite reports the IANA ID of the negotiated cipher suite.
func (c *Conn) CipherSuite() uint16 { return uint16(c.s.id) }

// ConnectionID returns the CID peers put in records to this session (the one
// the gateway issued), or nil. The slice must not be modified.
func (c *Conn) ConnectionID() []byte { return c.cidIn }

// NextWriteSeq returns the record number Seal will use next, as epoch<<48 |
// sequence number (DTLS 1.2's 64-bit form, RFC 6347 §4.1; 1.3 epochs stay
// below 2^16 here). It only grows. A gateway that persists snapshots
// reserves blocks above it and, after a restore, calls ReserveWriteSeq with
// the end of the last persisted reservation.
func (c *Conn) NextWriteSeq() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.write.epoch<<48 | c.write.seq
}

// ReserveWriteSeq moves the next write record number forward to n (an
// epoch<<48 | seq value from NextWriteSeq) if it is ahead, so that a session
// restored from an older snapshot continues above every record number used
// before a crash. A 1.3 epoch ahead of the snapshot's means our KeyUpdate was
// acknowledged after the snapshot: the write keys are advanced to it (the
// peer already reads that epoch). It returns ErrLimit when n is beyond the
// key's limit.
//
// DTLS 1.3 headers carry the low 16 bits of the sequence number and the peer
// reconstructs the rest from what it has seen (RFC 9147 §4.2.2): a jump of
// 2^15 or more within an epoch would make it misread every later record, so
// such a reservation is refused (ErrParams) and the session must be closed.
// Reserve blocks well below that (say 4096 records) for DTLS 1.3.
func (c *Conn) ReserveWriteSeq(n uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	epoch, seq := n>>48, n&maxSeq
	if epoch < c.write.epoch || (epoch == c.write.epoch && seq <= c.write.seq) {
		return nil
	}
	if c.s.tls13 && seq >= 1<<15 && (epoch > c.write.epoch || seq-c.write.seq >= 1<<15) {
		return fmt.Errorf("%w: a write sequence jump to %#x the peer cannot follow", ErrParams, n)
	}
	if epoch > c.write.epoch {
		if !c.s.tls13 {
			return ErrLimit // 1.2 has one epoch; an epoch ahead is a corrupt reservation
		}
		// Every epoch step took one KeyUpdate message of ours; a pending
		// one already counted its message_seq.
		steps := epoch - c.write.epoch
		if c.ku != nil {
			steps--
		}
		for c.write.epoch < epoch {
			next, err := c.write.next13(c.s)
			if err != nil {
				return err
			}
			c.write = next
		}
		c.ku = nil // acknowledged before the crash
		c.sendSeq += uint16(steps)
	}
	c.write.seq = seq
	if seq >= c.s.sealLimit {
		return ErrLimit
	}
	return nil
}

// Release drops the instantiated ciphers (AES key schedules, AEAD state,
// HMAC) of an idle session; the raw keys stay and the next Open or Seal
// rebuilds them, at the cost of a few allocations. See the package doc for
// the measured sizes.
func (c *Conn) Release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.write.release()
	c.read.release()
	if c.prev != nil {
		c.prev.release()
	}
	if c.hs != nil {
		c.hs.release()
	}
}

// Closed reports whether the peer closed the session or we sent
// close_notify.
func (c *Conn) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed != 0
}

// Stats are per-Conn counters for what the gateway reports.
type Stats struct {
	ReadEpoch, WriteEpoch uint64
	// AuthFailures counts records that failed authentication under the
	// current read key (the quantity of RFC 9147 §4.5.3's integrity limit).
	AuthFailures uint64
	// KeyUpdatePending: our KeyUpdate awaits the peer's ACK.
	KeyUpdatePending bool
}

// Stats returns the Conn's counters.
func (c *Conn) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{ReadEpoch: c.read.epoch, WriteEpoch: c.write.epoch,
		AuthFailures: c.read.fails, KeyUpdatePending: c.ku != nil}
}
