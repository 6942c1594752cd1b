package main

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
)

// --hold: a device that handshakes and then goes quiet for good, like one
// asleep with its radio off. The benchmarks hold 100,000 idle sessions on a
// gateway this way: a pion client Conn costs about 80 KB and four
// goroutines, a held device only its UDP socket, so the load generator fits
// beside the gateway on one machine. The server keeps the session (nothing
// tells it otherwise) until its idle timeout.

// errHeld is what a held device answers to a request: it sends nothing.
var errHeld = errors.New("held device: sends nothing (--hold)")

// holdConn is the PacketConn under a pion client in --hold mode. Once
// muted it swallows what pion writes (the close_notify of Close), and its
// Close ends pion's reader without closing the socket.
type holdConn struct {
	*net.UDPConn
	muted  atomic.Bool
	closed atomic.Bool
}

func (h *holdConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if h.muted.Load() {
		return len(p), nil
	}
	return h.UDPConn.WriteTo(p, addr)
}

func (h *holdConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := h.UDPConn.ReadFrom(p)
	if h.closed.Load() {
		return 0, nil, net.ErrClosed
	}
	return n, addr, err
}

// Close, once muted, unblocks the reader (a read deadline in the past) and
// keeps the socket: the device's address stays bound, as a sleeping
// device's would.
func (h *holdConn) Close() error {
	if !h.muted.Load() {
		return h.UDPConn.Close()
	}
	h.closed.Store(true)
	return h.UDPConn.SetReadDeadline(time.Unix(1, 0))
}

// heldClient is a device in --hold mode after its handshake: its socket.
type heldClient struct{ sock *net.UDPConn }

func (c *heldClient) setup(context.Context, stepFunc) error { return nil }

func (c *heldClient) do(context.Context, string) error { return errHeld }

func (c *heldClient) close(context.Context) { _ = c.sock.Close() }

func (c *heldClient) stats() (devsim.DeviceStats, devsim.LossStats) {
	return devsim.DeviceStats{}, devsim.LossStats{}
}
