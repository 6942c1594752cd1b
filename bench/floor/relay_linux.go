//go:build linux

package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/lwm2m-gateway/gateway/internal/udpsock"
	"golang.org/x/sys/unix"
)

// relay is the floor's whole state.
type relay struct {
	epfd     int
	dev      *udpsock.Socket // faces the devices
	wait     syscall.RawConn // epfd in the Go runtime's poller
	backend  unix.Sockaddr
	family   int
	byDevice map[netip.AddrPort]*peer
	byID     []*peer // epoll key - 1
	aead     cipher.AEAD
	nonce    [12]byte
	seq      uint64
	sealed   []byte
}

// peer is one device: its address and its upstream socket.
type peer struct {
	addr netip.AddrPort
	fd   int
}

// listenID is the epoll key of the device-facing socket.
const listenID = 0

// batch is how many datagrams one recvmmsg takes from the device-facing
// socket, as the gateway's listener (gateway/poller_linux.go listenBatch).
const batch = 16

func newRelay(listen, backend netip.AddrPort) (*relay, error) {
	dev, err := udpsock.Listen(net.UDPAddrFromAddrPort(listen), 4<<20, false)
	if err != nil {
		return nil, err
	}
	dev.PrepareBatch(batch, 1<<16)
	lfd, err := dev.Descriptor()
	if err != nil {
		return nil, err
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
	return &relay{epfd: epfd, dev: dev, wait: wait, backend: udpsock.Sockaddr(backend), family: bfamily,
		byDevice: make(map[netip.AddrPort]*peer), aead: aead, sealed: make([]byte, 0, 1<<16+64)}, nil
}

// loop relays until a socket fails. Its system calls are udpsock's raw
// ones, as the gateway's loop makes.
func (r *relay) loop() error {
	events := make([]unix.EpollEvent, 128)
	buf := make([]byte, 1<<16)
	for {
		var n int
		var err error
		if werr := r.wait.Read(func(uintptr) bool {
			n, err = udpsock.EpollPoll(r.epfd, events)
			return n > 0 || err != nil
		}); werr != nil {
			err = werr
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			if ev.Fd == listenID {
				if _, err := r.dev.ReadBatch(r.fromDevice); err != nil {
					return err
				}
				continue
			}
			r.fromBackend(r.byID[ev.Fd-1], buf)
		}
	}
}

// fromDevice relays one datagram a device sent (size > len(b): truncated,
// dropped).
func (r *relay) fromDevice(b []byte, size int, from netip.AddrPort) {
	if size > len(b) {
		return
	}
	p := r.byDevice[from]
	if p == nil {
		var err error
		if p, err = r.dial(from); err != nil {
			fmt.Fprintln(os.Stderr, "floor: upstream:", err)
			return
		}
		r.byDevice[from] = p
	}
	if !r.crypt(b) {
		return
	}
	_ = udpsock.Write(p.fd, b)
}

func (r *relay) fromBackend(p *peer, buf []byte) {
	n, err := udpsock.Read(p.fd, buf)
	if err != nil || !r.crypt(buf[:n]) {
		return
	}
	_, _ = r.dev.WriteToUDPAddrPort(buf[:n], p.addr)
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
func (r *relay) dial(device netip.AddrPort) (*peer, error) {
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
