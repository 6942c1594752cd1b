package record

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// packetPipe is an in-memory datagram link between a pion client and a pion
// server (later: our Conn). Every datagram passes a hook that may drop it, and
// the server's writes are logged so a test can capture its final flight the
// way the gateway's virtual PacketConn does.
type packetPipe struct {
	client, server *endpoint

	mu     sync.Mutex
	drop   func(fromServer bool, datagram []byte) bool
	sent   [][]byte // every datagram the server wrote, in order
	csent  [][]byte // every datagram the client wrote, in order
	closed bool
}

type pipeAddr string

func (a pipeAddr) Network() string { return "udp" }
func (a pipeAddr) String() string  { return string(a) }

func newPacketPipe() *packetPipe {
	p := &packetPipe{}
	p.client = newEndpoint(p, false, pipeAddr("127.0.0.1:40001"), pipeAddr("127.0.0.1:5684"))
	p.server = newEndpoint(p, true, pipeAddr("127.0.0.1:5684"), pipeAddr("127.0.0.1:40001"))
	return p
}

// setDrop installs the drop hook (nil: deliver everything).
func (p *packetPipe) setDrop(fn func(fromServer bool, datagram []byte) bool) {
	p.mu.Lock()
	p.drop = fn
	p.mu.Unlock()
}

// serverSent returns a copy of the server's write log.
func (p *packetPipe) serverSent() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([][]byte, len(p.sent))
	copy(out, p.sent)
	return out
}

func (p *packetPipe) close() {
	p.client.Close()
	p.server.Close()
}

// deliver sends a datagram from one side to the other, through the hook.
func (p *packetPipe) deliver(fromServer bool, datagram []byte) {
	b := append([]byte(nil), datagram...)
	p.mu.Lock()
	drop := p.drop
	if fromServer {
		p.sent = append(p.sent, b)
	} else {
		p.csent = append(p.csent, b)
	}
	p.mu.Unlock()
	if drop != nil && drop(fromServer, b) {
		return
	}
	to := p.client
	if !fromServer {
		to = p.server
	}
	select {
	case to.in <- b:
	case <-to.closed:
	}
}

// endpoint is one side of a packetPipe, a net.PacketConn.
type endpoint struct {
	p        *packetPipe
	isServer bool
	laddr    net.Addr
	raddr    net.Addr
	in       chan []byte

	mu        sync.Mutex
	deadline  time.Time
	wake      chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func newEndpoint(p *packetPipe, isServer bool, laddr, raddr net.Addr) *endpoint {
	return &endpoint{p: p, isServer: isServer, laddr: laddr, raddr: raddr,
		in: make(chan []byte, 4096), wake: make(chan struct{}), closed: make(chan struct{})}
}

func (e *endpoint) ReadFrom(b []byte) (int, net.Addr, error) { return e.readFrom(b, e.closed) }

// readFrom reads the next datagram until closed is closed or the deadline.
func (e *endpoint) readFrom(b []byte, closed <-chan struct{}) (int, net.Addr, error) {
	for {
		e.mu.Lock()
		dl, wake := e.deadline, e.wake
		e.mu.Unlock()
		var timeout <-chan time.Time
		var timer *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		}
		select {
		case p := <-e.in:
			if timer != nil {
				timer.Stop()
			}
			return copy(b, p), e.raddr, nil
		case <-closed:
			if timer != nil {
				timer.Stop()
			}
			return 0, nil, net.ErrClosed
		case <-wake:
			if timer != nil {
				timer.Stop()
			}
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		}
	}
}

// next returns the next datagram sent to this endpoint, or nil after d.
func (e *endpoint) next(d time.Duration) []byte {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case p := <-e.in:
		return p
	case <-t.C:
		return nil
	}
}

func (e *endpoint) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-e.closed:
		return 0, net.ErrClosed
	default:
	}
	e.p.deliver(e.isServer, b)
	return len(b), nil
}

func (e *endpoint) Close() error {
	e.closeOnce.Do(func() { close(e.closed) })
	return nil
}

func (e *endpoint) LocalAddr() net.Addr { return e.laddr }

func (e *endpoint) SetDeadline(t time.Time) error { return e.SetReadDeadline(t) }

func (e *endpoint) SetReadDeadline(t time.Time) error {
	e.mu.Lock()
	e.deadline = t
	close(e.wake)
	e.wake = make(chan struct{})
	e.mu.Unlock()
	return nil
}

func (e *endpoint) SetWriteDeadline(time.Time) error { return nil }

// detached is the server endpoint as pion sees it: pion closes its
// PacketConn when it exports a Conn, which must not close the pipe the test
// goes on using.
type detached struct {
	*endpoint
	closed    chan struct{}
	closeOnce sync.Once
	reading   atomic.Int32 // ReadFrom calls in progress
}

func detach(e *endpoint) *detached { return &detached{endpoint: e, closed: make(chan struct{})} }

func (d *detached) ReadFrom(b []byte) (int, net.Addr, error) {
	d.reading.Add(1)
	defer d.reading.Add(-1)
	select {
	case <-d.closed: // never race a datagram against the close
		return 0, nil, net.ErrClosed
	default:
	}
	return d.readFrom(b, d.closed)
}

// waitUnread waits until no read of pion's is in progress any more. With
// Connection IDs pion reads each path's socket on a goroutine of its own
// (connection_id.go, pathSocket.read) that ExportState does not wait for;
// on a loaded machine it may run only once the test has sent its next
// datagram, and then take that datagram half of the time (both cases of
// readFrom's select ready). After the export, waiting for it to return
// keeps every later datagram for the test.
func (d *detached) waitUnread(t testing.TB) {
	t.Helper()
	for deadline := time.Now().Add(wait); d.reading.Load() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("pion still reads from the pipe after its Conn was exported")
		}
	}
}

func (d *detached) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}
