package gateway

import (
	"net/netip"
	"time"

	"go.uber.org/zap"
)

// listener is one bound UDP socket, read by the poller's event loop
// (poller_linux.go), which routes its datagrams. On the lean data plane the
// loop does the whole device→backend path itself — route, open the record, apply the LwM2M
// checks, write upstream — and never waits on a handshake: handshakes run
// on their own goroutines from a bounded pool (admission.go).
type listener struct {
	srv        *Server
	index      int            // in Config.Listeners: the same listener on every replica
	pc         listenerConn   // socks[0]: writes to devices (any of socks would do: same address)
	socks      []listenerConn // one per event loop (Config.EventLoops), read by that loop
	reads      []func(p []byte, n int, from netip.AddrPort)
	missingSNI SNIPolicy
	backend    string
}

// unmapped turns an IPv4-mapped IPv6 source into plain IPv4, so one device
// has one address key whichever socket family it arrived on.
func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// route delivers one datagram:
//
//  1. a record carrying a Connection ID goes to whoever issued the CID (a
//     handshake, or the session it became), from whatever address: a device
//     whose NAT binding changed keeps its session;
//  2. otherwise, from an address with a handshake in progress, handshake
//     records go to the handshake (isHandshakeRecord) and the rest to the
//     address's established session, if any;
//  3. otherwise a ClientHello starts a new handshake — also from the address
//     of a live session: a rebooted device must get in (RFC 6347 §4.2.8),
//     and the old session is only replaced once the new handshake completes;
//  4. anything else is dropped and counted.
func (l *listener) route(p []byte, from netip.AddrPort) { l.routeOn(0, p, from) }

// routeOn is route for a datagram event loop loop read: a handshake it
// starts belongs to that loop, and so will its session's upstream sockets.
func (l *listener) routeOn(loop int, p []byte, from netip.AddrPort) {
	srv := l.srv
	if cid := recordCID(p, srv.cfg.CIDLength); cid != nil {
		r := srv.table.byCID(cid)
		switch {
		case r.s != nil && r.s.l == l:
			r.s.fromWire(p, from)
		case r.h != nil && r.h.l == l:
			r.h.deliverOrForward(p, from)
		case srv.cluster != nil:
			// Another replica's session, or one taken over from this
			// replica while it was away.
			srv.cluster.forward(l, p, from, cid)
		default:
			// A CID record that names nothing cannot start anything.
			srv.stats.drop(dropUnknownCID)
		}
		return
	}
	s, h := srv.table.lookup(l, from)
	switch {
	case h != nil && (s == nil || isHandshakeRecord(p)):
		h.deliverOrForward(p, from)
	case isClientHello(p):
		l.startHandshake(loop, p, from)
	case s != nil:
		s.fromWire(p, from)
	default:
		srv.stats.drop(dropNotHello)
	}
}

// startHandshake inspects a ClientHello and, if the gateway can serve it
// and admission allows (admission.go), starts a handshake for it on its own
// goroutine: the read loop builds no pion state and never waits. A hello
// the gateway can never serve (no extensions block, no served suite) is
// answered with a handshake_failure alert and no per-peer state.
func (l *listener) startHandshake(loop int, p []byte, from netip.AddrPort) {
	srv := l.srv
	h, verdict := parseHello(p, srv.servesSuite)
	switch verdict {
	case helloMalformed:
		srv.stats.drop(dropNotHello)
		return
	case helloNoExtensions, helloNoCommonSuite:
		reason, msg := dropNoCommonSuite, "client hello offers no cipher suite this gateway serves"
		if verdict == helloNoExtensions {
			// pion refuses a ClientHello without extensions (RFC 5246
			// §7.4.1.2 allows one); it could carry no PSK identity for
			// DTLS 1.3, nor an ECDHE group for DTLS 1.2 anyway.
			reason, msg = dropNoExtensions, "client hello without extensions: not supported"
		}
		srv.stats.drop(reason)
		srv.sampled.Info(msg, zap.Stringer("remote", from))
		if _, err := l.pc.WriteToUDPAddrPort(alertHandshakeFailure(&h), from); err != nil {
			srv.sampled.Warn("write alert", zap.Stringer("remote", from), zap.Error(err))
		}
		return
	}
	if srv.closing.Load() {
		srv.stats.drop(dropNoSession)
		return
	}
	if helloMessageSeq(p) > 0 {
		// It answers a cookie, but no handshake of this address is in
		// progress (evicted, timed out, or the cookie is forged): pion
		// starts a Conn at message_seq 0 and would never answer it
		// (SECURITY.md). The device starts over with a fresh hello when
		// its handshake times out.
		srv.stats.drop(dropStaleHello)
		return
	}
	established, handshaking := srv.table.counts()
	if established+handshaking >= srv.cfg.MaxSessions {
		srv.stats.drop(dropSessionLimit)
		return
	}
	now := time.Now()
	if reason, ok := srv.admission.allowSource(from.Addr(), now); !ok {
		srv.stats.drop(reason)
		return
	}
	class, key := srv.admission.classify(from, p, now)
	hs, release, ok := srv.admission.admit(class, key, now, func() *handshake {
		hs := srv.newHandshake(l, from, h)
		hs.loop = loop
		return hs
	})
	if !ok {
		srv.stats.drop(dropShed)
		return
	}
	if !srv.table.addPending(hs) {
		srv.admission.handshakeDone(hs)
		release()
		srv.stats.drop(dropNoSession)
		return
	}
	hs.deliver(p, from)
	srv.wg.Add(1)
	go hs.run(release)
}

// servesSuite reports whether a cipher suite is served.
func (srv *Server) servesSuite(id uint16) bool { return served(srv.cfg.CipherSuites, id) }

// readerFor is what readBatch calls for each datagram event loop k reads.
func (l *listener) readerFor(k int) func(p []byte, n int, from netip.AddrPort) {
	reads := &l.srv.loopReads[k]
	return func(p []byte, n int, from netip.AddrPort) {
		reads.Add(1)
		if n == 0 || n > l.srv.cfg.MaxDatagram || !from.IsValid() {
			l.srv.stats.drop(dropOversize)
			return
		}
		l.routeOn(k, p, from)
	}
}
