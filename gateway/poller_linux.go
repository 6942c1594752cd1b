//go:build linux

package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// poller reads every upstream socket from one goroutine with epoll, instead
// of one goroutine (and one read buffer) per socket and device: a sleeping
// device's upstream costs a file descriptor and a map entry. The sockets
// are non-blocking; epoll is level-triggered and each ready socket is
// drained a few datagrams at a time so one busy backend cannot starve the
// others. golang.org/x/sys/unix is used because the net package has no
// readiness API for many sockets at once.
type poller struct {
	srv  *Server
	epfd int
	wake int // eventfd: Close wakes the loop

	mu   sync.RWMutex
	ups  map[uint64]*upstream
	next uint64
	done chan struct{}

	stopOnce, relOnce sync.Once
}

// upstreamSocket is a non-blocking, connected UDP socket.
type upstreamSocket struct {
	fd int
	id uint64 // the poller's key: epoll event data
}

// wakeID is the epoll key of the eventfd; upstream ids start above it.
const wakeID = 0

// maxReadsPerWake bounds how many datagrams one ready socket delivers
// before the loop serves the others.
const maxReadsPerWake = 16

func newPoller(srv *Server) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gateway: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("gateway: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeID}); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, fmt.Errorf("gateway: epoll: %w", err)
	}
	return &poller{srv: srv, epfd: epfd, wake: wake, ups: make(map[uint64]*upstream), next: wakeID + 1, done: make(chan struct{})}, nil
}

// dial opens a connected UDP socket to dst, bound to src (and port, when
// not zero) if src is valid, and registers it for reading.
func (p *poller) dial(up *upstream, src netip.Addr, port uint16, dst netip.AddrPort) (upstreamSocket, netip.AddrPort, error) {
	family := unix.AF_INET6
	if dst.Addr().Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return upstreamSocket{}, netip.AddrPort{}, fmt.Errorf("upstream socket: %w", err)
	}
	fail := func(err error) (upstreamSocket, netip.AddrPort, error) {
		_ = unix.Close(fd)
		return upstreamSocket{}, netip.AddrPort{}, err
	}
	if src.IsValid() || port != 0 {
		if !src.IsValid() {
			src = netip.IPv6Unspecified()
			if family == unix.AF_INET {
				src = netip.IPv4Unspecified()
			}
		}
		if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(src, port))); err != nil {
			return fail(fmt.Errorf("upstream bind %s: %w", netip.AddrPortFrom(src, port), err))
		}
	}
	if err := unix.Connect(fd, sockaddr(dst)); err != nil {
		return fail(fmt.Errorf("upstream connect %s: %w", dst, err))
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail(fmt.Errorf("upstream getsockname: %w", err))
	}
	p.mu.Lock()
	id := p.next
	p.next++
	p.ups[id] = up
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Lock()
		delete(p.ups, id)
		p.mu.Unlock()
		return fail(fmt.Errorf("upstream epoll: %w", err))
	}
	return upstreamSocket{fd: fd, id: id}, addrPortOf(sa), nil
}

// remove stops watching an upstream's socket (before it is closed).
func (p *poller) remove(up *upstream) {
	p.mu.Lock()
	delete(p.ups, up.sock.id)
	p.mu.Unlock()
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, up.sock.fd, nil)
}

func (s upstreamSocket) write(b []byte) error {
	_, err := unix.Write(s.fd, b)
	return err
}

func (s upstreamSocket) close() { _ = unix.Close(s.fd) }

// run serves ready sockets until close.
func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	buf := make([]byte, p.srv.cfg.MaxDatagram+1)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			p.srv.log.Error("upstream poller stopped", zap.Error(err))
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == wakeID {
				return
			}
			p.mu.RLock()
			up := p.ups[id]
			p.mu.RUnlock()
			if up != nil {
				p.serve(up, buf)
			}
		}
	}
}

// serve reads what one ready socket holds, under its session's lock.
func (p *poller) serve(up *upstream, buf []byte) {
	s := up.s
	for range maxReadsPerWake {
		s.mu.Lock()
		if up.closed || s.closed {
			s.mu.Unlock()
			return
		}
		n, err := unix.Read(up.sock.fd, buf)
		if err != nil {
			s.mu.Unlock()
			switch {
			case errors.Is(err, unix.EAGAIN):
				return
			case errors.Is(err, unix.ECONNREFUSED):
				// ICMP port unreachable: the backend is down. Keep the
				// socket: a restarted backend must still reach the device.
				up.markDown()
				p.srv.stats.upstreamErrors.Add(1)
				continue
			}
			p.srv.sampled.Warn("read from backend", zap.String("backend", up.name), zap.Error(err))
			return
		}
		if n > p.srv.cfg.MaxDatagram {
			s.mu.Unlock()
			p.srv.stats.drop(dropOversize)
			continue
		}
		up.markUp()
		pionWrite := s.backendDataLocked(up, buf[:n])
		s.mu.Unlock()
		if pionWrite != nil {
			if err := s.pion.write(pionWrite); err != nil {
				s.close(closeReason(err, "write to device failed"), false)
				return
			}
		}
	}
}

// stop ends the loop started by run (once, whoever calls); sockets are
// closed by their sessions.
func (p *poller) stop() {
	p.stopOnce.Do(func() {
		var one = [8]byte{1}
		_, _ = unix.Write(p.wake, one[:])
		<-p.done
	})
}

// close stops the loop and frees the poller's descriptors.
func (p *poller) close() {
	p.stop()
	p.release()
}

// release frees the poller's own descriptors (a poller whose run never
// started, or after run returned), once.
func (p *poller) release() {
	p.relOnce.Do(func() {
		_ = unix.Close(p.epfd)
		_ = unix.Close(p.wake)
	})
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}
