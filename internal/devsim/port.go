package devsim

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v5/packetio"
)

// port is the UDP socket a device keeps across its DTLS sessions. A real
// device that reboots, or re-handshakes after an idle time, sends its new
// ClientHello from the same address and port as before (issue 9), so the
// socket must outlive every session. pion closes the PacketConn under a Conn
// when the Conn closes or exports its state; each session therefore runs on
// its own view of the port (portConn), whose Close detaches the view and
// leaves the socket open.
//
// One goroutine reads the socket and hands each datagram to the attached
// view. A datagram that arrives while no view is attached, or while the
// device sleeps, is lost, as it is for a device that is rebooting or has its
// radio off. Safe for concurrent use.
type port struct {
	pc net.PacketConn // the socket, possibly under a LossyConn

	mu     sync.Mutex
	cur    *portConn
	asleep bool
	closed bool

	lostIn  atomic.Int64 // datagrams received with no session listening, or asleep
	lostOut atomic.Int64 // datagrams not sent because the device slept

	readerDone chan struct{}
}

// portQueue bounds what a session's view holds unread, like a socket's
// receive buffer: further datagrams are lost.
const portQueue = 256

func newPort(pc net.PacketConn) *port {
	p := &port{pc: pc, readerDone: make(chan struct{})}
	go p.readLoop()
	return p
}

// attach detaches the current view, if any, and returns a fresh one that
// receives every datagram from now on.
func (p *port) attach() *portConn {
	c := &portConn{p: p, buf: packetio.NewBuffer()}
	c.buf.SetLimitCount(portQueue)
	p.mu.Lock()
	old := p.cur
	if p.closed {
		_ = c.buf.Close()
	} else {
		p.cur = c
	}
	p.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return c
}

// detach removes c if it is the attached view.
func (p *port) detach(c *portConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == c {
		p.cur = nil
	}
}

// setAsleep turns the radio off (true) or on: while off, nothing is sent
// and everything received is lost.
func (p *port) setAsleep(asleep bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asleep = asleep
}

func (p *port) sleeping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.asleep
}

// close closes the socket and the attached view and waits for the reader.
func (p *port) close() error {
	p.mu.Lock()
	p.closed = true
	cur := p.cur
	p.cur = nil
	p.mu.Unlock()
	if cur != nil {
		_ = cur.Close()
	}
	err := p.pc.Close()
	<-p.readerDone
	return err
}

func (p *port) readLoop() {
	defer close(p.readerDone)
	buf := make([]byte, 64*1024)
	for {
		n, from, err := p.pc.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP errors and the like: a device keeps listening
		}
		p.mu.Lock()
		cur, asleep := p.cur, p.asleep
		p.mu.Unlock()
		if cur == nil || asleep {
			p.lostIn.Add(1)
			continue
		}
		if _, err := cur.buf.Write(buf[:n], packetio.Attributes{{Key: addrKey{}, Value: from}}); err != nil {
			p.lostIn.Add(1) // queue full or view just closed
		}
	}
}

type addrKey struct{}

// portConn is one session's view of a port: a net.PacketConn whose Close
// detaches it without closing the socket.
type portConn struct {
	p      *port
	buf    *packetio.Buffer
	closed atomic.Bool
}

var _ net.PacketConn = (*portConn)(nil)

func (c *portConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, attrs, err := c.buf.Read(b, nil)
	if errors.Is(err, io.EOF) {
		return 0, nil, net.ErrClosed
	}
	if err != nil {
		return n, nil, err
	}
	from, _ := attrs.Get(addrKey{}).(net.Addr)
	return n, from, nil
}

func (c *portConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if c.p.sleeping() {
		c.p.lostOut.Add(1)
		return len(b), nil // the radio is off: lost
	}
	return c.p.pc.WriteTo(b, addr)
}

// Close detaches the view; the socket stays open. Idempotent.
func (c *portConn) Close() error {
	if !c.closed.Swap(true) {
		c.p.detach(c)
		_ = c.buf.Close()
	}
	return nil
}

func (c *portConn) LocalAddr() net.Addr { return c.p.pc.LocalAddr() }

func (c *portConn) SetDeadline(t time.Time) error { return c.buf.SetReadDeadline(t) }

func (c *portConn) SetReadDeadline(t time.Time) error { return c.buf.SetReadDeadline(t) }

// SetWriteDeadline is a no-op: writes to a UDP socket do not block.
func (c *portConn) SetWriteDeadline(time.Time) error { return nil }
