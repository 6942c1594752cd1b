//go:build linux

package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// relay is the floor's whole state.
type relay struct {
	epfd, lfd int
	wait      syscall.RawConn // epfd in the Go runtime's poller
	backend   unix.Sockaddr
	family    int
	byDevice  map[netip.AddrPort]*peer
	byID      []*peer // epoll key - 1
	aead      cipher.AEAD
	nonce     [12]byte
	seq       uint64
	sealed    []byte
}

// peer is one device: its address and its upstream socket.
type peer struct {
	addr unix.Sockaddr
	fd   int
}

// listenID is the epoll key of the device-facing socket.
const listenID = 0

func newRelay(listen, backend netip.AddrPort) (*relay, error) {
	family := unix.AF_INET
	if listen.Addr().Is6() {
		family = unix.AF_INET6
	}
	lfd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(lfd, sockaddr(listen)); err != nil {
		return nil, fmt.Errorf("bind %s: %w", listen, err)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// The loop waits for the epoll instance in the Go runtime's poller, as
	// the gateway's does (gateway/poller_linux.go): a thread blocked in
	// epoll_wait keeps the runtime's monitor waking to take its processor
	// back, a cost of Go, not of forwarding.
	if err := unix.SetNonblock(epfd, true); err != nil {
		return nil, err
	}
	wait, err := os.NewFile(uintptr(epfd), "epoll").SyscallConn()
	if err != nil {
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: listenID}); err != nil {
		return nil, err
	}
	key := make([]byte, 16)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	bfamily := unix.AF_INET
	if backend.Addr().Is6() {
		bfamily = unix.AF_INET6
	}
	return &relay{epfd: epfd, lfd: lfd, wait: wait, backend: sockaddr(backend), family: bfamily,
		byDevice: make(map[netip.AddrPort]*peer), aead: aead, sealed: make([]byte, 0, 1<<16+64)}, nil
}

// loop relays until a socket fails.
func (r *relay) loop() error {
	events := make([]unix.EpollEvent, 128)
	buf := make([]byte, 1<<16)
	for {
		var n int
		var err error
		if werr := r.wait.Read(func(uintptr) bool {
			n, err = unix.EpollWait(r.epfd, events, 0)
			return n > 0 || err != nil
		}); werr != nil {
			err = werr
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			if ev.Fd == listenID {
				r.fromDevice(buf)
				continue
			}
			r.fromBackend(r.byID[ev.Fd-1], buf)
		}
	}
}

func (r *relay) fromDevice(buf []byte) {
	n, from, err := unix.Recvfrom(r.lfd, buf, 0)
	if err != nil {
		return
	}
	key := addrPortOf(from)
	p := r.byDevice[key]
	if p == nil {
		if p, err = r.dial(from); err != nil {
			fmt.Fprintln(os.Stderr, "floor: upstream:", err)
			return
		}
		r.byDevice[key] = p
	}
	if !r.crypt(buf[:n]) {
		return
	}
	_, _ = unix.Write(p.fd, buf[:n])
}

func (r *relay) fromBackend(p *peer, buf []byte) {
	n, err := unix.Read(p.fd, buf)
	if err != nil || !r.crypt(buf[:n]) {
		return
	}
	_ = unix.Sendto(r.lfd, buf[:n], 0, p.addr)
}

// crypt seals b and opens it again: the AEAD work of relaying one DTLS
// record, as a DTLS relay must do at least once per direction.
func (r *relay) crypt(b []byte) bool {
	r.seq++
	binary.BigEndian.PutUint64(r.nonce[4:], r.seq)
	r.sealed = r.aead.Seal(r.sealed[:0], r.nonce[:], b, nil)
	_, err := r.aead.Open(b[:0], r.nonce[:], r.sealed, nil)
	return err == nil
}

// dial opens the device's connected upstream socket and watches it.
func (r *relay) dial(device unix.Sockaddr) (*peer, error) {
	fd, err := unix.Socket(r.family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, r.backend); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	p := &peer{addr: device, fd: fd}
	r.byID = append(r.byID, p)
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(len(r.byID))}); err != nil {
		r.byID = r.byID[:len(r.byID)-1]
		_ = unix.Close(fd)
		return nil, err
	}
	return p, nil
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
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}
