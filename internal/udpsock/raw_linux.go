//go:build linux

package udpsock

import (
	"net"
	"net/netip"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// An event loop's system calls never block: its sockets are non-blocking
// or read and written with MSG_DONTWAIT, and it polls epoll with a zero
// timeout (it waits in the runtime's poller instead). They are made as raw
// system calls, which the Go runtime is not told about: a call it is told
// about (syscall.Syscall, what x/sys/unix's wrappers use) wakes the
// runtime's monitor thread when every processor was idle, so that it can
// take the processor back if the call blocks — a context switch per
// request at a steady trickle of traffic, measured with perf
// (sched:sched_switch, runtime.sysmon) — and none of these calls can block.
// Hand-written because x/sys/unix wraps these calls only with Syscall.
// Each function repeats its own EINTR loop on purpose: a pointer converted
// to uintptr stays valid only in the argument list of the assembly call
// itself (unsafe.Pointer rule 4), so the calls cannot go through a shared
// Go helper.

// Read reads one datagram from a non-blocking socket.
func Read(fd int, b []byte) (int, error) {
	for {
		n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, errno
	}
}

// Write sends one datagram on a connected non-blocking socket.
func Write(fd int, b []byte) error {
	for {
		_, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return errno
	}
}

// Sendto sends one datagram to, without waiting (MSG_DONTWAIT); to is
// IPv4-mapped for an IPv6 socket. A zone is an interface index or name.
func Sendto(fd, family int, b []byte, to netip.AddrPort) error {
	var sa4 unix.RawSockaddrInet4
	var sa6 unix.RawSockaddrInet6
	var sa unsafe.Pointer
	var salen uintptr
	port := to.Port()
	if family == unix.AF_INET {
		sa4.Family = unix.AF_INET
		sa4.Addr = to.Addr().Unmap().As4()
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		sa, salen = unsafe.Pointer(&sa4), unix.SizeofSockaddrInet4
	} else {
		a := to.Addr()
		sa6.Family = unix.AF_INET6
		sa6.Addr = a.As16()
		p := (*[2]byte)(unsafe.Pointer(&sa6.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		if z := a.Zone(); z != "" {
			sa6.Scope_id = zoneIndex(z)
		}
		sa, salen = unsafe.Pointer(&sa6), unix.SizeofSockaddrInet6
	}
	for {
		_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
			unix.MSG_DONTWAIT, uintptr(sa), salen)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return errno
	}
}

// EpollPoll returns the events ready now (a zero timeout: it never
// waits).
func EpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	for {
		n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, errno
	}
}

// zoneIndex is an IPv6 zone's interface index: a number, or an interface
// name.
func zoneIndex(z string) uint32 {
	if id, err := strconv.ParseUint(z, 10, 32); err == nil {
		return uint32(id)
	}
	if ifi, err := net.InterfaceByName(z); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}
