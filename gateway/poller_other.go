//go:build !linux

package gateway

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"go.uber.org/zap"
)

// poller, where epoll is not available, reads each upstream socket on a
// goroutine of its own: correct, but without the memory savings of
// poller_linux.go. The gateway's production target is Linux.
type poller struct {
	srv *Server
	wg  sync.WaitGroup
}

type upstreamSocket struct{ c *net.UDPConn }

func newPoller(srv *Server, _ int) (*poller, error) { return &poller{srv: srv}, nil }

func (p *poller) dial(up *upstream, src netip.Addr, port uint16, dst netip.AddrPort) (upstreamSocket, netip.AddrPort, error) {
	var laddr *net.UDPAddr
	if src.IsValid() || port != 0 {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, port))
	}
	c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return upstreamSocket{}, netip.AddrPort{}, err
	}
	up.p = p
	p.wg.Add(1)
	go p.read(up, c)
	return upstreamSocket{c: c}, c.LocalAddr().(*net.UDPAddr).AddrPort(), nil
}

func (p *poller) read(up *upstream, c *net.UDPConn) {
	defer p.wg.Done()
	buf := make([]byte, p.srv.cfg.MaxDatagram+1)
	s := up.s
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				up.markDown()
				continue
			}
			return
		}
		if n > p.srv.cfg.MaxDatagram {
			p.srv.stats.drop(dropOversize)
			continue
		}
		s.mu.Lock()
		if up.closed || s.closed {
			s.mu.Unlock()
			return
		}
		up.markUp()
		pionWrite := s.backendDataLocked(up, buf[:n])
		s.mu.Unlock()
		if pionWrite != nil {
			_ = s.pion.write(pionWrite)
		}
	}
}

func (p *poller) remove(*upstream) {}

// multiLoop: one read goroutine per listener, whatever Config.EventLoops.
const multiLoop = false

// watch starts the listener's read loop: a goroutine of its own.
func (p *poller) watch(l *listener, _ int) error {
	l.srv.readers.Add(1)
	go func() {
		defer l.srv.readers.Done()
		if err := l.serve(); err != nil {
			l.srv.log.Error("listener stopped", zap.Error(err))
		}
	}()
	return nil
}

// listenerConn is a listener's socket; Linux has its own (udpsock_linux.go).
type listenerConn = *net.UDPConn

// listenUDP binds a listener's socket.
func listenUDP(addr *net.UDPAddr, readBuffer int, _ bool) (*net.UDPConn, error) {
	pc, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, err
	}
	_ = pc.SetReadBuffer(readBuffer)
	return pc, nil
}

// serve reads datagrams until the socket is closed.
func (l *listener) serve() error {
	// One byte more than the limit tells an oversized datagram from a full one.
	buf := make([]byte, l.srv.cfg.MaxDatagram+1)
	for {
		n, from, err := l.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			l.srv.sampled.Warn("read from listener", zap.Error(err))
			continue
		}
		l.srv.loopReads[0].Add(1)
		if n > l.srv.cfg.MaxDatagram || n == 0 {
			l.srv.stats.drop(dropOversize)
			continue
		}
		l.route(buf[:n], unmapped(from))
	}
}

func (s upstreamSocket) write(b []byte) error { _, err := s.c.Write(b); return err }

func (s upstreamSocket) close() { _ = s.c.Close() }

func (p *poller) run() {}

func (p *poller) close() { p.wg.Wait() }

func (p *poller) stop() {}

func (p *poller) release() {}
