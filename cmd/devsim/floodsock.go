package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// The flood's two ways of sending a ClientHello from a new source address
// and port, both inside 127.0.0.0/8.

// randomLoopback returns a random address in 127.0.0.0/8, not ending in
// .0 or .255.
func randomLoopback() [4]byte {
	n := rand.Uint32()
	b := [4]byte{127, byte(n >> 16), byte(n >> 8), byte(n)}
	if b[3] == 0 || b[3] == 255 {
		b[3] = 1 + byte(n>>24)%254
	}
	return b
}

// udpSender binds a new UDP socket for every hello, on a random
// 127.0.0.0/8 address with a port the kernel picks: a new source address
// and port without privileges. Plain syscalls (x/sys/unix) rather than
// net.ListenUDP: a socket that lives for one datagram needs no poller
// registration, and at 10,000 per second that cost counts.
type udpSender struct{ dst *net.UDPAddr }

type udpSource struct {
	fd  int
	dst unix.Sockaddr
}

func (u udpSender) open() (floodSource, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: randomLoopback()}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("bind: %w", err)
	}
	dst := &unix.SockaddrInet4{Port: u.dst.Port}
	copy(dst.Addr[:], u.dst.IP.To4())
	return udpSource{fd: fd, dst: dst}, nil
}

func (u udpSender) close() error { return nil }

func (s udpSource) send(p []byte) error {
	if err := unix.Sendto(s.fd, p, 0, s.dst); err != nil {
		return fmt.Errorf("sendto: %w", err)
	}
	return nil
}

func (s udpSource) close() { _ = unix.Close(s.fd) }

// rawSender writes whole IPv4/UDP packets with a spoofed source in
// 127.0.0.0/8 through a raw socket (IPPROTO_RAW implies IP_HDRINCL; the
// kernel fills in the IP checksum and ID). Root only.
type rawSender struct {
	conn *ipv4.RawConn
	dst  *net.UDPAddr
}

func newRawSender(dst *net.UDPAddr) (*rawSender, error) {
	c, err := net.ListenPacket("ip4:255", dst.IP.String()) // IPPROTO_RAW: send only
	if err != nil {
		return nil, fmt.Errorf("--flood-socket raw needs root: %w", err)
	}
	rc, err := ipv4.NewRawConn(c)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	return &rawSender{conn: rc, dst: dst}, nil
}

type rawSource struct {
	s       *rawSender
	src     net.IP
	srcPort int
	pkt     []byte
}

func (r *rawSender) open() (floodSource, error) {
	a := randomLoopback()
	return &rawSource{s: r, src: net.IPv4(a[0], a[1], a[2], a[3]).To4(), srcPort: 1024 + rand.IntN(65536-1024)}, nil
}

func (r *rawSender) close() error { return r.conn.Close() }

func (s *rawSource) send(payload []byte) error {
	dst := s.s.dst
	if err := checkLoopbackSource(s.src, dst.IP); err != nil {
		return err
	}
	s.pkt = udpPacket(s.pkt, s.src, dst.IP.To4(), s.srcPort, dst.Port, payload)
	h := &ipv4.Header{
		Version: ipv4.Version, Len: ipv4.HeaderLen, TotalLen: ipv4.HeaderLen + len(s.pkt),
		TTL: 64, Protocol: unix.IPPROTO_UDP, Src: s.src, Dst: dst.IP.To4(),
	}
	if err := s.s.conn.WriteTo(h, s.pkt, nil); err != nil {
		return fmt.Errorf("raw write: %w", err)
	}
	return nil
}

func (s *rawSource) close() {}

// udpPacket builds a UDP header and payload with the checksum over the
// IPv4 pseudo-header (RFC 768). Hand-written: x/net has no UDP encoder and
// eight bytes do not justify a packet library.
func udpPacket(dst []byte, src, dstIP net.IP, srcPort, dstPort int, payload []byte) []byte {
	n := 8 + len(payload)
	dst = append(dst[:0], make([]byte, 8)...)
	binary.BigEndian.PutUint16(dst[0:], uint16(srcPort))
	binary.BigEndian.PutUint16(dst[2:], uint16(dstPort))
	binary.BigEndian.PutUint16(dst[4:], uint16(n))
	dst = append(dst, payload...)
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.To4())
	add(dstIP.To4())
	sum += unix.IPPROTO_UDP + uint32(n)
	add(dst)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	ck := ^uint16(sum)
	if ck == 0 {
		ck = 0xffff // 0 means "no checksum" in IPv4
	}
	binary.BigEndian.PutUint16(dst[6:], ck)
	return dst
}

var errNotLoopback = errors.New("not a loopback address")

// checkLoopbackSource is a last guard on the raw path: a packet whose
// source or destination is outside 127.0.0.0/8 is never written.
func checkLoopbackSource(src, dst net.IP) error {
	if !src.IsLoopback() || !dst.IsLoopback() || !strings.HasPrefix(src.String(), "127.") {
		return errNotLoopback
	}
	return nil
}
