//go:build linux

package gateway

import (
	"errors"
	"net"
	"net/netip"

	"go.uber.org/zap"
)

// readBatch reads what the listener's socket holds, a batch at most (one
// recvmmsg), and routes each datagram (listener.route). A datagram longer
// than Config.MaxDatagram (the buffers hold one byte more) or empty is
// dropped and counted.
func (l *listener) readBatch() {
	_, err := l.pc.readBatch(l.routeRead)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		l.srv.sampled.Warn("read from listener", zap.Error(err))
	}
}

func (l *listener) routeRead(p []byte, n int, from netip.AddrPort) {
	if n == 0 || n > l.srv.cfg.MaxDatagram || !from.IsValid() {
		l.srv.stats.drop(dropOversize)
		return
	}
	l.route(p, from)
}
