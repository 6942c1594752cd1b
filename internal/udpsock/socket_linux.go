//go:build linux

package udpsock

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket is a UDP socket kept out of Go's runtime poller, for an event
// loop that waits on epoll itself (the gateway's listeners, bench/floor).
//
// Why hand-written: a *net.UDPConn registers its socket with the runtime's
// own epoll, so every datagram that arrives also wakes a thread of the
// runtime's network poller, which finds nobody waiting (the gateway's event
// loop reads the socket, gateway/poller_linux.go) and sleeps again: measured while
// forwarding, a third of the gateway's context switches (perf record -e
// sched:sched_switch: runtime.netpoll from findRunnable), and a context
// switch costs more than the rest of a request's work. x/net's batch reads
// (ipv4.PacketConn.ReadBatch) need a *net.UDPConn, so recvmmsg is called
// here with x/sys/unix's types.
//
// Nothing blocks on it (MSG_DONTWAIT): the loop reads only when epoll says
// so, and a write that finds the send buffer full fails with EAGAIN (the
// datagram is lost, as on a congested link; DTLS and CoAP retransmit)
// instead of blocking an OS thread per writer, which under a flood of
// handshakes could be thousands. Every use of fd holds mu for reading and
// Close takes it to close, so a descriptor number the kernel gives to the
// next socket is never used through a closed Socket.
type Socket struct {
	mu     sync.RWMutex
	fd     int
	closed bool
	family int
	local  *net.UDPAddr

	// Batch read state: only the poller's goroutine reads.
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
	bufs  [][]byte
}

// Listen binds a UDP socket to addr the way net.ListenUDP("udp") does:
// an unspecified address (or none) listens on IPv6 and IPv4 alike (one
// dual-stack socket; IPv4 only where the kernel has no IPv6). With
// reusePort (SO_REUSEPORT) several sockets share the address and the kernel
// spreads senders over them by source address and port (Linux lets only
// sockets of the same user join).
func Listen(addr *net.UDPAddr, readBuffer int, reusePort bool) (*Socket, error) {
	ap := addr.AddrPort()
	ip := ap.Addr()
	if !ip.IsValid() {
		ip = netip.IPv6Unspecified()
	}
	ip = ip.Unmap()
	family, dual := unix.AF_INET6, false
	switch {
	case ip.IsUnspecified():
		dual = true
	case ip.Is4():
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil && dual {
		family, dual = unix.AF_INET, false
		fd, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	}
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	fail := func(op string, err error) (*Socket, error) {
		_ = unix.Close(fd)
		return nil, &net.OpError{Op: "listen", Net: "udp", Addr: addr, Err: os.NewSyscallError(op, err)}
	}
	if dual {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return fail("setsockopt", err)
		}
	}
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fail("setsockopt", err)
		}
	}
	// Large buffers absorb bursts (reconnect storms, floods) while the
	// loop catches up, and answers while the link drains; the kernel caps
	// them at rmem_max and wmem_max.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, readBuffer)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, readBuffer)
	bind := ip
	if dual || family == unix.AF_INET6 && ip.Is4() {
		bind = netip.IPv6Unspecified()
	}
	if err := unix.Bind(fd, familySockaddr(family, netip.AddrPortFrom(bind.WithZone(ap.Addr().Zone()), ap.Port()))); err != nil {
		return fail("bind", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	local := net.UDPAddrFromAddrPort(AddrPortOf(sa))
	if family == unix.AF_INET6 && local.IP.To4() != nil {
		local.IP = local.IP.To16()
	}
	return &Socket{fd: fd, family: family, local: local}, nil
}

// LocalAddr is the bound address.
func (s *Socket) LocalAddr() net.Addr { return s.local }

// Close closes the socket once; later uses fail with net.ErrClosed.
func (s *Socket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	s.closed = true
	return unix.Close(s.fd)
}

// WriteToUDPAddrPort sends one datagram to.
func (s *Socket) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, net.ErrClosed
	}
	if s.family == unix.AF_INET && !to.Addr().Unmap().Is4() {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(to), Err: errors.New("IPv6 destination on an IPv4 socket")}
	}
	if err := Sendto(s.fd, s.family, b, to); err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(to), Err: os.NewSyscallError("sendto", err)}
	}
	return len(b), nil
}

// Descriptor is the socket's file descriptor, for epoll (under mu: the
// caller registers it before anything can close the socket).
func (s *Socket) Descriptor() (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, net.ErrClosed
	}
	return s.fd, nil
}

// PrepareBatch sets up batch reads of up to n datagrams of up to size
// bytes each.
func (s *Socket) PrepareBatch(n, size int) {
	s.hdrs = make([]unix.Mmsghdr, n)
	s.iovs = make([]unix.Iovec, n)
	s.names = make([]unix.RawSockaddrInet6, n)
	s.bufs = make([][]byte, n)
	for i := range n {
		s.bufs[i] = make([]byte, size)
		s.iovs[i].Base = &s.bufs[i][0]
		s.iovs[i].SetLen(size)
		s.hdrs[i].Hdr.Iov = &s.iovs[i]
		s.hdrs[i].Hdr.SetIovlen(1)
		s.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.names[i]))
	}
}

// ReadBatch reads the datagrams waiting, up to the batch size, without
// blocking (recvmmsg, MSG_DONTWAIT), and calls fn for each with its length
// as received (more than the buffer: truncated) and its source. It returns
// how many it read; none waiting is (0, nil).
func (s *Socket) ReadBatch(fn func(p []byte, n int, from netip.AddrPort)) (int, error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return 0, net.ErrClosed
	}
	for i := range s.hdrs {
		s.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		s.hdrs[i].Hdr.Flags = 0
		s.hdrs[i].Len = 0
	}
	var n uintptr
	var errno unix.Errno
	for {
		// Never blocks: a raw system call (raw_linux.go says why).
		n, _, errno = unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.hdrs[0])),
			uintptr(len(s.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		if errno != unix.EINTR {
			break
		}
	}
	s.mu.RUnlock()
	switch {
	case errno == unix.EAGAIN:
		return 0, nil
	case errno != 0:
		return 0, os.NewSyscallError("recvmmsg", errno)
	}
	for i := range int(n) {
		h := &s.hdrs[i]
		size := int(h.Len)
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			size = len(s.bufs[i]) + 1
		}
		fn(s.bufs[i][:min(size, len(s.bufs[i]))], size, rawAddrPort(&s.names[i]))
	}
	return int(n), nil
}

// rawAddrPort is the source address recvmmsg wrote, IPv4-mapped addresses
// unmapped.
func rawAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := func(p *uint16) uint16 {
		b := (*[2]byte)(unsafe.Pointer(p)) // network byte order
		return uint16(b[0])<<8 | uint16(b[1])
	}
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port(&sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 && !a.Is4In6() {
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(a.Unmap(), port(&sa.Port))
	}
	return netip.AddrPort{}
}

// familySockaddr is to as a socket address of family (IPv4 mapped into IPv6
// for an IPv6 socket). A zone is an interface name or index.
func familySockaddr(family int, to netip.AddrPort) unix.Sockaddr {
	a := to.Addr()
	if family == unix.AF_INET {
		return &unix.SockaddrInet4{Port: int(to.Port()), Addr: a.Unmap().As4()}
	}
	sa := &unix.SockaddrInet6{Port: int(to.Port()), Addr: a.As16()}
	if z := a.Zone(); z != "" {
		sa.ZoneId = zoneIndex(z)
	}
	return sa
}

// Sockaddr is ap as a socket address of its own family.
func Sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// AddrPortOf is a socket address as a netip.AddrPort, IPv4-mapped
// addresses unmapped.
func AddrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}
