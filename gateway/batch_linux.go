//go:build linux

package gateway

import (
	"errors"
	"net"

	"go.uber.org/zap"
)

// readBatch reads what the listener's socket of event loop k holds, a
// batch at most (one recvmmsg), and routes each datagram (listener.route).
// A datagram longer than Config.MaxDatagram (the buffers hold one byte
// more) or empty is dropped and counted.
func (l *listener) readBatch(k int) {
	_, err := l.socks[k].ReadBatch(l.reads[k])
	if err != nil && !errors.Is(err, net.ErrClosed) {
		l.srv.sampled.Warn("read from listener", zap.Error(err))
	}
}
