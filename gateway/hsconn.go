package gateway

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/record"
	"github.com/pion/transport/v5/deadline"
)

// hsQueue is how many datagrams a handshake buffers between the listener's
// read loop and pion. A full queue drops, like a full socket buffer would;
// DTLS retransmits.
const hsQueue = 16

// hsHeldQueue is how many datagrams wait for the session during a hand-over
// (deliver).
const hsHeldQueue = 256

// datagram is one received UDP payload and its source.
type datagram struct {
	b    []byte
	from netip.AddrPort
}

// hsConn is the net.PacketConn a handshake's pion Conn runs over: reads come
// from the listener's demultiplexer (deliver), writes leave through the
// listener's socket. Every datagram pion writes passes flight() first, so
// the gateway sees each flight before the device does: it learns when the
// cookie was answered (embryonic → verified), applies the session policy
// before the ServerHello (DTLS 1.3) or the final flight (DTLS 1.2) leaves,
// and keeps the last flight for the record layer to resend after the
// hand-over (RFC 6347 §4.2.4).
//
// After the handshake, hold stops handing datagrams to pion, so records
// that arrive while the session is handed over are kept for the new owner
// instead of being consumed by a Conn about to stop.
type hsConn struct {
	l      *listener
	in     chan datagram
	readDL *deadline.Deadline
	closed chan struct{} // Close (pion's, at the end of a Conn): reads and writes end
	once   sync.Once
	shutCh chan struct{} // shut (the gateway's): deliveries end too
	shutMu sync.Once
	flight func(p []byte) flightVerdict

	keepApp  bool          // lean plane: application records wait for the session, pion never sees them
	holdCh   chan struct{} // closed by hold
	holdOnce sync.Once
	idle     atomic.Bool // pion waits in a held ReadFrom: it has processed all it read
	// finalSent: pion wrote its DTLS 1.2 final flight (read by ReadFrom
	// without c.mu, on every datagram of the handshake).
	finalSent atomic.Bool

	mu       sync.Mutex
	leftover []datagram // taken from the queue as hold raced with ReadFrom
	held     []datagram // delivered after hold, behind the queue (deliver)
	muted    bool       // a refusal was sent in place of pion's flight
	capture  bool       // keep pion's DTLS 1.2 final flight (during the handshake)
	last     [][]byte   // pion's last DTLS 1.2 final flight (ChangeCipherSpec, Finished)
	onWrite  func(to netip.AddrPort)
}

// flightVerdict is what flight decides on one outgoing datagram.
type flightVerdict uint8

const (
	flightSend   flightVerdict = iota
	flightRefuse               // replace the flight by a handshake_failure alert
)

var _ net.PacketConn = (*hsConn)(nil)

func newHSConn(l *listener, keepApp bool, flight func([]byte) flightVerdict) *hsConn {
	return &hsConn{
		l:       l,
		in:      make(chan datagram, hsQueue),
		readDL:  deadline.New(),
		closed:  make(chan struct{}),
		shutCh:  make(chan struct{}),
		flight:  flight,
		capture: true,
		keepApp: keepApp,
		holdCh:  make(chan struct{}),
	}
}

// deliver queues a copy of a datagram for pion without blocking; it reports
// false when the queue is full or the conn is closed. Once held (the
// hand-over has begun) pion reads nothing more, so a datagram waits in
// held for the session that takes over, up to hsHeldQueue of them: a
// device may send a burst right behind its Finished, and the hand-over may
// take longer than the burst needs to fill the queue. The shut check and the
// append share c.mu with drain, so nothing is appended after drain took
// them.
func (c *hsConn) deliver(p []byte, from netip.AddrPort) bool {
	select {
	case <-c.holdCh:
		c.mu.Lock()
		defer c.mu.Unlock()
		select {
		case <-c.shutCh:
			return false
		default:
		}
		if len(c.held) >= hsHeldQueue {
			return false
		}
		c.held = append(c.held, datagram{b: bytes.Clone(p), from: from})
		return true
	default:
	}
	select {
	case <-c.shutCh:
		return false
	default:
	}
	select {
	case c.in <- datagram{b: bytes.Clone(p), from: from}:
		return true
	default:
		return false
	}
}

// ReadFrom returns the next datagram routed to this handshake. Once held,
// it hands out nothing more and marks pion idle: everything pion read
// before has been processed.
func (c *hsConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		select {
		case <-c.holdCh:
			return c.heldRead()
		default:
		}
		select {
		case <-c.holdCh:
			return c.heldRead()
		case d := <-c.in:
			held := false
			select {
			case <-c.holdCh:
				held = true
			default:
			}
			if held || (c.keepApp && (isApplicationRecord(d.b) || (c.finalSent.Load() && !isEpoch0(d.b)))) {
				// The datagram belongs to the session that takes over:
				// hold raced with this read, or it is application data,
				// which pion must never consume on the lean plane (the
				// device may send it right behind its Finished). Once pion
				// wrote its DTLS 1.2 final flight it needs nothing more
				// from the device, and a tls12_cid record, whose type is
				// hidden, is application data or a retransmitted Finished:
				// the record layer handles both.
				c.mu.Lock()
				c.leftover = append(c.leftover, d)
				c.mu.Unlock()
				continue
			}
			n := copy(p, d.b)
			return n, net.UDPAddrFromAddrPort(d.from), nil
		case <-c.readDL.Done():
			return 0, nil, os.ErrDeadlineExceeded
		case <-c.closed:
			return 0, nil, net.ErrClosed
		}
	}
}

func (c *hsConn) heldRead() (int, net.Addr, error) {
	c.idle.Store(true)
	defer c.idle.Store(false)
	select {
	case <-c.readDL.Done():
		return 0, nil, os.ErrDeadlineExceeded
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

// WriteTo sends pion's datagram unless the gateway refuses the flight it
// belongs to; a refused flight is replaced by one plaintext
// handshake_failure alert and everything pion writes after it is dropped.
// pion writes to a new address only after it accepted an authenticated
// Connection ID record from there; onWrite lets the session follow.
func (c *hsConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	to, err := addrPort(addr)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	if c.muted {
		c.mu.Unlock()
		return len(p), nil
	}
	if c.flight != nil && c.flight(p) == flightRefuse {
		// The alert takes the record sequence number of the record it
		// replaces: a fresh one, which the device's replay check accepts.
		c.muted = true
		c.mu.Unlock()
		var seq [6]byte
		if len(p) >= recordHeaderLen {
			copy(seq[:], p[5:11])
		}
		_, err := c.l.pc.WriteToUDPAddrPort(plaintextAlert(40, seq), to)
		return len(p), err
	}
	if c.capture {
		// Keep pion's last transmission of its DTLS 1.2 final flight: the
		// record layer resends it if the device never got it.
		switch {
		case record.IsFinalFlight(p):
			c.last = [][]byte{bytes.Clone(p)}
			c.finalSent.Store(true)
		case len(c.last) > 0:
			c.last = append(c.last, bytes.Clone(p))
		}
	}
	onWrite := c.onWrite
	c.mu.Unlock()
	if onWrite != nil {
		onWrite(to)
	}
	return c.l.pc.WriteToUDPAddrPort(p, to)
}

// keep turns the handshake's conn into a pion-plane session's conn: no
// more flight inspection or capture; onWrite follows the peer address.
func (c *hsConn) keep(onWrite func(netip.AddrPort)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flight, c.capture, c.last, c.onWrite = nil, false, nil, onWrite
}

// hold stops handing datagrams to pion and returns pion's last flight.
func (c *hsConn) hold() (lastFlight [][]byte) {
	c.holdOnce.Do(func() { close(c.holdCh) })
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// pionIdle reports whether pion waits in a held ReadFrom.
func (c *hsConn) pionIdle() bool { return c.idle.Load() }

// drain returns the datagrams queued and not read by pion, in order.
func (c *hsConn) drain() []datagram {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.leftover
	for {
		select {
		case d := <-c.in:
			out = append(out, d)
		default:
			out = append(out, c.held...)
			c.leftover, c.held = nil, nil
			return out
		}
	}
}

// Close stops reads and writes; the shared listener socket stays open.
// pion calls it when its Conn ends — also when ExportState hands the
// session over, and deliveries must then still queue for the new owner.
func (c *hsConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// shut is the gateway's close: reads, writes and deliveries end.
func (c *hsConn) shut() {
	_ = c.Close()
	c.shutMu.Do(func() { close(c.shutCh) })
}

func (c *hsConn) LocalAddr() net.Addr { return c.l.pc.LocalAddr() }

func (c *hsConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *hsConn) SetReadDeadline(t time.Time) error {
	c.readDL.Set(t)
	return nil
}

// SetWriteDeadline is a no-op: writes to a UDP socket do not block for long.
func (c *hsConn) SetWriteDeadline(time.Time) error { return nil }

func addrPort(addr net.Addr) (netip.AddrPort, error) {
	if u, ok := addr.(*net.UDPAddr); ok {
		return u.AddrPort(), nil
	}
	return netip.ParseAddrPort(addr.String())
}
