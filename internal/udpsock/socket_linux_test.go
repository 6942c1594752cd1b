//go:build linux

package udpsock

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// got is one datagram ReadBatch delivered.
type got struct {
	p    []byte
	n    int
	from netip.AddrPort
}

// readN reads from s until want datagrams came (waiting for readability
// with poll, as the event loop waits with epoll) and checks no batch was
// larger than the batch size.
func readN(t *testing.T, s *Socket, want, batch int) []got {
	t.Helper()
	fd, err := s.Descriptor()
	if err != nil {
		t.Fatal(err)
	}
	var out []got
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d datagrams after 10 s", len(out), want)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 1000); err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatal(err)
		}
		n, err := s.ReadBatch(func(p []byte, size int, from netip.AddrPort) {
			out = append(out, got{p: bytes.Clone(p), n: size, from: from})
		})
		if err != nil {
			t.Fatal(err)
		}
		if n > batch {
			t.Fatalf("one read gave %d datagrams, batch is %d", n, batch)
		}
	}
	return out
}

// The listener's socket reads several datagrams at a time, in order, each
// with its own source, and tells a datagram larger than its buffer
// (dropped as oversized by the listener) from one that fits.
func TestUDPSocketBatchRead(t *testing.T) {
	s, err := Listen(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.PrepareBatch(4, 65)
	a, b := dialUDP(t, s.LocalAddr()), dialUDP(t, s.LocalAddr())
	for i := range 10 {
		c := a
		if i%2 == 1 {
			c = b
		}
		if _, err := c.Write([]byte(fmt.Sprintf("datagram %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Write(make([]byte, 100)); err != nil { // larger than the buffer
		t.Fatal(err)
	}
	if _, err := a.Write(nil); err != nil { // empty
		t.Fatal(err)
	}
	out := readN(t, s, 12, 4)
	for i, g := range out[:10] {
		want, from := fmt.Sprintf("datagram %d", i), a.LocalAddr().(*net.UDPAddr).AddrPort()
		if i%2 == 1 {
			from = b.LocalAddr().(*net.UDPAddr).AddrPort()
		}
		if string(g.p) != want || g.n != len(want) || g.from != from {
			t.Fatalf("datagram %d: %q (%d bytes) from %s, want %q from %s", i, g.p, g.n, g.from, want, from)
		}
	}
	if g := out[10]; g.n <= 65 || len(g.p) != 65 {
		t.Fatalf("a 100-byte datagram into 65-byte buffers: size %d, %d bytes kept; want a size over 65", g.n, len(g.p))
	}
	if g := out[11]; g.n != 0 {
		t.Fatalf("empty datagram: size %d", g.n)
	}
	// Nothing waiting: no datagram and no error, without blocking.
	n, err := s.ReadBatch(func([]byte, int, netip.AddrPort) { t.Fatal("datagram from nowhere") })
	if n != 0 || err != nil {
		t.Fatalf("empty socket: %d, %v", n, err)
	}
}

// A listener on the unspecified address serves IPv4 and IPv6 devices on
// one socket, as net.ListenUDP does: IPv4 sources come unmapped (one key
// per device whatever the family) and answers reach both.
func TestUDPSocketDualStack(t *testing.T) {
	s, err := Listen(&net.UDPAddr{}, 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.PrepareBatch(4, 2048)
	port := s.LocalAddr().(*net.UDPAddr).Port
	v4 := dialUDP(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	peers := []*net.UDPConn{v4}
	if v6, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv6loopback, Port: port}); err == nil {
		defer v6.Close()
		peers = append(peers, v6)
	} else {
		t.Logf("no IPv6 loopback here (%v): IPv4 only", err)
	}
	for i, c := range peers {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		g := readN(t, s, 1, 4)[0]
		want := c.LocalAddr().(*net.UDPAddr).AddrPort()
		if g.from.Addr().Unmap() != want.Addr().Unmap() || g.from.Port() != want.Port() || (want.Addr().Is4() != g.from.Addr().Is4()) {
			t.Fatalf("source %s, want %s", g.from, want)
		}
		if _, err := s.WriteToUDPAddrPort([]byte("answer"), g.from); err != nil {
			t.Fatalf("answer to %s: %v", g.from, err)
		}
		buf := make([]byte, 64)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "answer" {
			t.Fatalf("peer %s: %q, %v", want, buf[:n], err)
		}
	}
}

// A closed socket fails every use with net.ErrClosed, and an IPv4 socket
// refuses an IPv6 destination with an error instead of sending elsewhere.
func TestUDPSocketErrors(t *testing.T) {
	s, err := Listen(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	s.PrepareBatch(1, 64)
	if _, err := s.WriteToUDPAddrPort([]byte("x"), netip.MustParseAddrPort("[::1]:9")); err == nil {
		t.Fatal("IPv6 destination on an IPv4 socket accepted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.WriteToUDPAddrPort([]byte("x"), netip.MustParseAddrPort("127.0.0.1:9")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if _, err := s.ReadBatch(func([]byte, int, netip.AddrPort) {}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
	if _, err := s.Descriptor(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("descriptor after Close: %v", err)
	}
	// A port in use is an error naming the address.
	a, err := Listen(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if b, err := Listen(a.LocalAddr().(*net.UDPAddr), 1<<20, false); err == nil {
		b.Close()
		t.Fatal("second bind to a port in use succeeded")
	} else if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("bind to a port in use: %v", err)
	}
}

func dialUDP(t *testing.T, to net.Addr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, to.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
