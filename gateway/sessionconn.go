package gateway

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/pion/transport/v5/deadline"
)

// inboundQueue is how many datagrams a session buffers between the listener's
// read loop and pion's read loop. A full queue drops, like a full socket
// buffer would; DTLS and CoAP both retransmit.
const inboundQueue = 32

// datagram is one received UDP payload and its source.
type datagram struct {
	buf  *[]byte
	n    int
	from netip.AddrPort
}

// sessionConn is the net.PacketConn a session's *dtls.Conn runs over: reads
// come from the listener's demultiplexer (deliver), writes leave through the
// listener's shared socket. It lets the gateway see every datagram before
// pion does and route by Connection ID (see the package doc).
type sessionConn struct {
	l        *listener
	in       chan datagram
	readDL   *deadline.Deadline
	closed   chan struct{}
	once     sync.Once
	onWrite  func(to netip.AddrPort) // learns the peer address pion writes to
	bufPool  *sync.Pool
	maxBytes int
}

var _ net.PacketConn = (*sessionConn)(nil)

func newSessionConn(l *listener, onWrite func(netip.AddrPort)) *sessionConn {
	return &sessionConn{
		l:       l,
		in:      make(chan datagram, inboundQueue),
		readDL:  deadline.New(),
		closed:  make(chan struct{}),
		onWrite: onWrite,
		bufPool: l.bufPool,
	}
}

// deliver hands a datagram to the session without blocking; it reports false
// when the queue is full or the session is closed (the datagram is dropped).
func (c *sessionConn) deliver(p []byte, from netip.AddrPort) bool {
	select {
	case <-c.closed:
		return false
	default:
	}
	buf := c.bufPool.Get().(*[]byte)
	n := copy(*buf, p)
	select {
	case c.in <- datagram{buf: buf, n: n, from: from}:
		return true
	default:
		c.bufPool.Put(buf)
		return false
	}
}

// ReadFrom returns the next datagram routed to this session.
func (c *sessionConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case d := <-c.in:
		n := copy(p, (*d.buf)[:d.n])
		c.bufPool.Put(d.buf)
		return n, net.UDPAddrFromAddrPort(d.from), nil
	case <-c.readDL.Done():
		return 0, nil, os.ErrDeadlineExceeded
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

// WriteTo sends through the listener socket and tells the session where its
// peer is now: pion writes to a new address only after it accepted an
// authenticated Connection ID record from there.
func (c *sessionConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	to, err := addrPort(addr)
	if err != nil {
		return 0, err
	}
	if c.onWrite != nil {
		c.onWrite(to)
	}
	return c.l.pc.WriteToUDPAddrPort(p, to)
}

// Close stops reads; the shared listener socket stays open.
func (c *sessionConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *sessionConn) LocalAddr() net.Addr { return c.l.pc.LocalAddr() }

func (c *sessionConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *sessionConn) SetReadDeadline(t time.Time) error {
	c.readDL.Set(t)
	return nil
}

// SetWriteDeadline is a no-op: writes to a UDP socket do not block for long.
func (c *sessionConn) SetWriteDeadline(time.Time) error { return nil }

func addrPort(addr net.Addr) (netip.AddrPort, error) {
	if u, ok := addr.(*net.UDPAddr); ok {
		return u.AddrPort(), nil
	}
	return netip.ParseAddrPort(addr.String())
}
