//go:build linux

package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"github.com/lwm2m-gateway/gateway/internal/udpsock"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// poller is the gateway's data-plane event loop: one goroutine and one
// epoll instance read the listeners' sockets and every upstream socket.
// Instead of one goroutine (and one read buffer) per socket and device, a
// sleeping device's upstream costs a file descriptor and a map entry; and a
// request and its answer are both handled on the loop's thread, without the
// wake-ups and hand-offs between a listener goroutine and an upstream one
// (bench/BENCHMARKS.md measures the difference against bench/floor, the
// same loop without DTLS). No read blocks (upstream sockets are
// non-blocking, listener reads use MSG_DONTWAIT) and epoll is
// level-triggered: each ready upstream socket gives one datagram per turn
// (a socket with more stays ready), so one busy backend cannot starve the
// others and no read ends in EAGAIN; a listener gives a batch (recvmmsg).
// golang.org/x/sys/unix is used because the net package has no readiness
// API for many sockets at once.
type poller struct {
	srv   *Server
	index int // in Server.pollers: the listener socket it reads (listener.socks)
	epfd  int
	wait  syscall.RawConn // epfd in the runtime's poller: the loop parks there
	file  *os.File        // owns epfd
	wake  int             // eventfd: Close wakes the loop

	mu        sync.RWMutex
	ups       map[uint64]*upstream
	listeners map[uint64]*listener // by listenKey
	next      uint64
	done      chan struct{}

	stopOnce, relOnce sync.Once
}

// upstreamSocket is a non-blocking, connected UDP socket.
type upstreamSocket struct {
	fd int
	id uint64 // the poller's key: epoll event data
}

// multiLoop: several event loops can share a listener's address
// (SO_REUSEPORT, Config.EventLoops).
const multiLoop = true

// wakeID is the epoll key of the eventfd; upstream ids start above it.
const wakeID = 0

// listenKey marks a listener's epoll key (the listener's index in the low
// bits); upstream ids count up from 1 and never reach it.
const listenKey = 1 << 63

// listenBatch is how many datagrams one recvmmsg takes from a listener:
// more than a turn of the loop usually brings, few enough that the
// upstream sockets are served between batches.
const listenBatch = 16

func newPoller(srv *Server, index int) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gateway: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("gateway: eventfd: %w", err)
	}
	fail := func(what string, err error) (*poller, error) {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, fmt.Errorf("gateway: %s: %w", what, err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeID}); err != nil {
		return fail("epoll", err)
	}
	// The epoll instance is itself pollable: handed to the runtime's
	// poller (os.NewFile registers a non-blocking descriptor), the loop
	// waits for it as a goroutine parked on a socket would, instead of
	// blocking a thread in epoll_wait. A thread blocked in a system call
	// keeps the runtime's monitor (sysmon) waking every 20 µs to take its
	// processor back: measured, half the gateway's context switches while
	// forwarding.
	if err := unix.SetNonblock(epfd, true); err != nil {
		return fail("epoll", err)
	}
	file := os.NewFile(uintptr(epfd), "epoll")
	wait, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()
		_ = unix.Close(wake)
		return nil, fmt.Errorf("gateway: epoll: %w", err)
	}
	return &poller{srv: srv, index: index, epfd: epfd, wait: wait, file: file, wake: wake, ups: make(map[uint64]*upstream),
		listeners: make(map[uint64]*listener), next: wakeID + 1, done: make(chan struct{})}, nil
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
		if err := unix.Bind(fd, udpsock.Sockaddr(netip.AddrPortFrom(src, port))); err != nil {
			return fail(fmt.Errorf("upstream bind %s: %w", netip.AddrPortFrom(src, port), err))
		}
	}
	if err := unix.Connect(fd, udpsock.Sockaddr(dst)); err != nil {
		return fail(fmt.Errorf("upstream connect %s: %w", dst, err))
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail(fmt.Errorf("upstream getsockname: %w", err))
	}
	up.p = p
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
	return upstreamSocket{fd: fd, id: id}, udpsock.AddrPortOf(sa), nil
}

// remove stops watching an upstream's socket (before it is closed).
func (p *poller) remove(up *upstream) {
	p.mu.Lock()
	delete(p.ups, up.sock.id)
	p.mu.Unlock()
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, up.sock.fd, nil)
}

func (s upstreamSocket) write(b []byte) error { return udpsock.Write(s.fd, b) }

func (s upstreamSocket) close() { _ = unix.Close(s.fd) }

// run serves ready sockets until close.
func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	buf := make([]byte, p.srv.cfg.MaxDatagram+1)
	for {
		var n int
		var err error
		werr := p.wait.Read(func(uintptr) bool {
			n, err = udpsock.EpollPoll(p.epfd, events)
			return n > 0 || err != nil // nothing ready: park until the epoll fd is
		})
		if werr != nil {
			err = werr
		}
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			p.srv.log.Error("event loop stopped", zap.Error(err))
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == wakeID {
				return
			}
			if id&listenKey != 0 {
				p.mu.RLock()
				l := p.listeners[id]
				p.mu.RUnlock()
				if l != nil {
					l.readBatch(p.index)
				}
				continue
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

// serve reads one datagram from a ready upstream socket, under its
// session's lock.
func (p *poller) serve(up *upstream, buf []byte) {
	s := up.s
	s.mu.Lock()
	if up.closed || s.closed {
		s.mu.Unlock()
		return
	}
	n, err := udpsock.Read(up.sock.fd, buf)
	if err != nil {
		s.mu.Unlock()
		switch {
		case errors.Is(err, unix.EAGAIN):
		case errors.Is(err, unix.ECONNREFUSED):
			// ICMP port unreachable: the backend is down. Keep the
			// socket: a restarted backend must still reach the device.
			up.markDown()
			p.srv.stats.upstreamErrors.Add(1)
		default:
			p.srv.sampled.Warn("read from backend", zap.String("backend", up.name), zap.Error(err))
		}
		return
	}
	if n > p.srv.cfg.MaxDatagram {
		s.mu.Unlock()
		p.srv.stats.drop(dropOversize)
		return
	}
	up.markUp()
	pionWrite := s.backendDataLocked(up, buf[:n])
	s.mu.Unlock()
	if pionWrite != nil {
		if err := s.pion.write(pionWrite); err != nil {
			s.close(closeReason(err, "write to device failed"), false)
		}
	}
}

// watch adds the listener's socket k (this loop's) to the loop: from now
// on its datagrams are read and routed on the loop's goroutine.
func (p *poller) watch(l *listener, k int) error {
	sock := l.socks[k]
	fd, err := sock.Descriptor()
	if err != nil {
		return fmt.Errorf("gateway: listener socket: %w", err)
	}
	sock.PrepareBatch(listenBatch, l.srv.cfg.MaxDatagram+1)
	id := listenKey | uint64(l.index)
	p.mu.Lock()
	p.listeners[id] = l
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Lock()
		delete(p.listeners, id)
		p.mu.Unlock()
		return fmt.Errorf("gateway: listener epoll: %w", err)
	}
	return nil
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
		_ = p.file.Close() // and epfd
		_ = unix.Close(p.wake)
	})
}

// listenerConn is a listener's socket: on Linux a udpsock.Socket, read by
// the poller's event loop.
type listenerConn = *udpsock.Socket

// listenUDP binds a listener's socket (udpsock.Listen).
func listenUDP(addr *net.UDPAddr, readBuffer int, reusePort bool) (*udpsock.Socket, error) {
	return udpsock.Listen(addr, readBuffer, reusePort)
}
