package gateway

import (
	"errors"
	"net"
	"net/netip"

	"github.com/pion/dtls/v4"
)

// pionPlane keeps the handshake's pion Conn for the life of the session
// (Config.DataPlane = DataPlanePion): pion protects the records, with its
// goroutines, and a reader goroutine of ours hands the decrypted payloads
// to the session. It is the previous data path, kept as a fallback for one
// release; everything above the records (routing, LwM2M, upstreams) is the
// same as on the lean plane.
type pionPlane struct {
	s    *session
	dc   *dtls.Conn
	conn *hsConn
}

func newPionPlane(s *session, dc *dtls.Conn, conn *hsConn) *pionPlane {
	p := &pionPlane{s: s, dc: dc, conn: conn}
	conn.keep(p.followPeer)
	return p
}

// start runs the reader goroutine.
func (p *pionPlane) start() {
	p.s.srv.wg.Add(1)
	go p.read()
}

func (p *pionPlane) deliver(b []byte, from netip.AddrPort) {
	if !p.conn.deliver(b, from) {
		p.s.srv.stats.drop(dropQueueFull)
	}
}

// read forwards decrypted datagrams from the device until the Conn ends.
func (p *pionPlane) read() {
	s := p.s
	defer s.srv.wg.Done()
	buf := make([]byte, s.srv.cfg.MaxDatagram)
	for {
		n, err := p.dc.Read(buf)
		if err != nil {
			s.close(closeReason(err, "device closed the session"), false)
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		reply := s.deviceDataLocked(buf[:n])
		s.mu.Unlock()
		if reply != nil {
			_ = p.write(reply)
		}
	}
}

// write protects and sends one payload; never called with s.mu held.
func (p *pionPlane) write(b []byte) error {
	_, err := p.dc.Write(b)
	return err
}

// followPeer is called on every write pion makes; pion writes to a new
// address only after accepting an authenticated CID record from it.
func (p *pionPlane) followPeer(to netip.AddrPort) {
	s := p.s
	s.mu.Lock()
	if !s.closed {
		s.movePeerLocked(to)
	}
	s.mu.Unlock()
}

// close ends the Conn: with close_notify when notify, silently otherwise
// (the conn is closed first, so pion's close_notify goes nowhere).
func (p *pionPlane) close(notify bool) {
	if !notify {
		p.conn.shut()
	}
	_ = p.dc.Close()
	p.conn.shut()
}

func closeReason(err error, fallback string) string {
	if errors.Is(err, dtls.ErrConnClosed) || errors.Is(err, net.ErrClosed) {
		return "closed"
	}
	return fallback + ": " + err.Error()
}
