package gateway

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// tapRelay is a UDP relay between test clients and the gateway that records
// every datagram, per client, with the time it passed: what a device sees on
// the wire (issue 9.3, 9.4). Each client gets its own socket towards the
// gateway, kept for the client's address, so a client that handshakes again
// from the same port reaches the gateway from the same address too (9.1).
// A test can hold the clients' datagrams (hold) and release them later, and
// send a datagram to the gateway from a client's relayed address (inject),
// as an off-path spoofer of that address would.
type tapRelay struct {
	t  *testing.T
	pc *net.UDPConn // the clients' side
	gw *net.UDPAddr

	mu    sync.Mutex
	peers map[netip.AddrPort]*tapPeer
	hold  func(p *tapPeer, b []byte) bool // client datagrams it returns true for wait in held
	held  []tapHeld
	wg    sync.WaitGroup
}

// tapPeer is one client and its socket towards the gateway.
type tapPeer struct {
	client netip.AddrPort
	up     *net.UDPConn
	mu     sync.Mutex
	log    []tapped
}

// tapped is one datagram that passed the relay.
type tapped struct {
	toClient bool
	at       time.Time
	b        []byte
}

type tapHeld struct {
	p *tapPeer
	b []byte
}

func newTapRelay(t *testing.T, gateway *net.UDPAddr) *tapRelay {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &tapRelay{t: t, pc: pc, gw: gateway, peers: make(map[netip.AddrPort]*tapPeer)}
	r.wg.Add(1)
	go r.fromClients()
	t.Cleanup(func() {
		_ = pc.Close()
		r.mu.Lock()
		for _, p := range r.peers {
			_ = p.up.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// addr is where clients send.
func (r *tapRelay) addr() *net.UDPAddr { return r.pc.LocalAddr().(*net.UDPAddr) }

func (r *tapRelay) fromClients() {
	defer r.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := r.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		p := r.peer(from)
		if p == nil {
			return
		}
		b := append([]byte(nil), buf[:n]...)
		r.mu.Lock()
		if r.hold != nil && r.hold(p, b) {
			r.held = append(r.held, tapHeld{p, b})
			r.mu.Unlock()
			continue
		}
		r.mu.Unlock()
		p.record(false, b)
		_, _ = p.up.Write(b)
	}
}

// peer returns the relay's peer for a client, opening its socket towards
// the gateway on first use; nil once the relay is closed.
func (r *tapRelay) peer(client netip.AddrPort) *tapPeer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.peers[client]; p != nil {
		return p
	}
	up, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, r.gw)
	if err != nil {
		r.t.Errorf("tap relay: %v", err)
		return nil
	}
	p := &tapPeer{client: client, up: up}
	r.peers[client] = p
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 65535)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			b := append([]byte(nil), buf[:n]...)
			p.record(true, b)
			_, _ = r.pc.WriteToUDPAddrPort(b, client)
		}
	}()
	return p
}

// record logs one datagram.
func (p *tapPeer) record(toClient bool, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, tapped{toClient: toClient, at: time.Now(), b: b})
}

// datagrams returns what passed between client and gateway so far.
func (r *tapRelay) datagrams(client netip.AddrPort) []tapped {
	r.mu.Lock()
	p := r.peers[client]
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.datagrams()
}

func (p *tapPeer) datagrams() []tapped {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]tapped(nil), p.log...)
}

// gatewaySide is the address the gateway sees for a client.
func (r *tapRelay) gatewaySide(client netip.AddrPort) netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.peers[client]; p != nil {
		return p.up.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	return netip.AddrPort{}
}

// holdWhen holds the clients' datagrams that match (nil: none) until
// release. match must not call the relay's methods (it runs under its
// lock); it may call the peer's.
func (r *tapRelay) holdWhen(match func(p *tapPeer, b []byte) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hold = match
}

// heldCount is the number of datagrams held now.
func (r *tapRelay) heldCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}

// release stops holding and sends the held datagrams on, in order.
func (r *tapRelay) release() {
	r.mu.Lock()
	held := r.held
	r.held, r.hold = nil, nil
	r.mu.Unlock()
	for _, h := range held {
		h.p.record(false, h.b)
		_, _ = h.p.up.Write(h.b)
	}
}

// inject sends b to the gateway from client's relayed address, unrecorded:
// a spoofer's datagram. The gateway's answers reach the client, as they
// would reach the real owner of a spoofed address.
func (r *tapRelay) inject(client netip.AddrPort, b []byte) {
	r.mu.Lock()
	p := r.peers[client]
	r.mu.Unlock()
	if p == nil {
		r.t.Fatalf("tap relay: no client %v", client)
	}
	_, _ = p.up.Write(b)
}

// clientHellos returns the plaintext ClientHellos a client sent, in order.
func clientHellos(log []tapped) [][]byte {
	var out [][]byte
	for _, d := range log {
		if !d.toClient && isClientHello(d.b) {
			out = append(out, d.b)
		}
	}
	return out
}

// serverHellos counts the ServerHellos the gateway sent a client that are
// not HelloRetryRequests: handshakes that went past the cookie.
func serverHellos(log []tapped) int {
	n := 0
	for _, d := range log {
		if d.toClient && isServerHello(d.b) {
			n++
		}
	}
	return n
}

// isServerHello reports whether a datagram starts with a plaintext
// ServerHello that is not a HelloRetryRequest.
func isServerHello(p []byte) bool {
	return len(p) > recordHeaderLen && p[0] == contentTypeHandshake && p[3] == 0 && p[4] == 0 &&
		p[recordHeaderLen] == handshakeServerHello && !isHelloRetryRequest(p)
}

// plainAlert returns the description of a datagram that is exactly one
// plaintext (epoch 0) fatal alert record.
func plainAlert(p []byte) (description byte, ok bool) {
	if len(p) != recordHeaderLen+2 || p[0] != contentTypeAlert || p[3] != 0 || p[4] != 0 || p[recordHeaderLen] != alertFatal {
		return 0, false
	}
	return p[recordHeaderLen+1], true
}
