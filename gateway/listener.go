package gateway

import (
	"errors"
	"net"
	"net/netip"
	"sync"

	"go.uber.org/zap"
)

// listener is one bound UDP socket and the read loop that routes its
// datagrams to sessions.
type listener struct {
	srv        *Server
	pc         *net.UDPConn
	missingSNI SNIPolicy
	backend    string
	bufPool    *sync.Pool
}

func newListener(srv *Server, pc *net.UDPConn, lc Listener) *listener {
	size := srv.cfg.MaxDatagram
	return &listener{
		srv:        srv,
		pc:         pc,
		missingSNI: lc.MissingSNI,
		backend:    lc.Backend,
		bufPool: &sync.Pool{New: func() any {
			b := make([]byte, size)
			return &b
		}},
	}
}

// serve reads datagrams until the socket is closed.
func (l *listener) serve() error {
	// One byte more than the limit tells an oversized datagram from a full one.
	buf := make([]byte, l.srv.cfg.MaxDatagram+1)
	for {
		n, from, err := l.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			l.srv.warn.Warn("read from listener", zap.Error(err))
			continue
		}
		if n > l.srv.cfg.MaxDatagram || n == 0 {
			l.srv.stats.drop(dropOversize)
			continue
		}
		l.route(buf[:n], from)
	}
}

// route delivers one datagram: by Connection ID, then by address, and a new
// session only for a ClientHello (see the package doc).
func (l *listener) route(p []byte, from netip.AddrPort) {
	srv := l.srv
	if cid := recordCID(p, srv.cfg.CIDLength); cid != nil {
		if s := srv.table.byCID(cid); s != nil && s.l == l {
			if !s.deliver(p, from) {
				srv.stats.drop(dropQueueFull)
			}
			return
		}
		// A CID record that names no session cannot start one.
		srv.stats.drop(dropUnknownCID)
		return
	}
	if s := srv.table.byAddr(l, from); s != nil {
		s.embryo.datagrams.Add(1)
		if !s.deliver(p, from) {
			srv.stats.drop(dropQueueFull)
		}
		return
	}
	if !isClientHello(p) {
		srv.stats.drop(dropNotHello)
		return
	}
	switch srv.inspectClientHello(p) {
	case helloMalformed:
		srv.stats.drop(dropNotHello)
		return
	case helloNoCommonSuite:
		srv.stats.drop(dropNoCommonSuite)
		return
	}
	if srv.table.len() >= srv.cfg.MaxSessions {
		srv.stats.drop(dropSessionLimit)
		return
	}
	if !srv.admission.allowIP(from.Addr()) {
		srv.stats.drop(dropRateLimited)
		return
	}
	s, err := srv.newSession(l, from)
	if err != nil {
		srv.stats.drop(dropNoSession)
		if !errors.Is(err, ErrServerClosed) {
			srv.warn.Warn("cannot start session", zap.Stringer("remote", from), zap.Error(err))
		}
		return
	}
	s.embryo.datagrams.Add(1)
	s.deliver(p, from)
	if evict := srv.admission.admitEmbryo(s); len(evict) > 0 {
		srv.stats.dropped[dropEvicted].Add(uint64(len(evict)))
		// Unroute at once (cheap); closing waits for pion's handshake
		// goroutine, so it never runs on the read loop.
		for _, old := range evict {
			srv.table.remove(old)
		}
		go func() {
			for _, old := range evict {
				old.close("evicted: no answer to the cookie")
			}
		}()
	}
}
