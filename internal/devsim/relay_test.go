package devsim

import (
	"bytes"
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol/handshake"
)

// relay is a tiny stand-in for the gateway: a pion/dtls/v4 PSK server that
// forwards each session's decrypted datagrams to the backend over its own UDP
// socket, and the backend's answers back.
type relay struct {
	t       *testing.T
	ln      net.Listener
	tap     *tapConn
	backend net.Addr

	mu          sync.Mutex
	conns       []net.Conn
	states      []dtls.State
	remotes     []string              // remote address of each completed handshake
	established map[string]*dtls.Conn // by remote address
	replaced    int                   // sessions dropped for a new ClientHello
	errs        []error
	wg          sync.WaitGroup
}

// startRelay listens on 127.0.0.1:0 for DTLS 1.2 and 1.3, accepting the one
// PSK psk (whose Hash the server must know: the offer does not carry it),
// and forwards to backend. extra options are appended.
func startRelay(t *testing.T, backend net.Addr, psk dtls.PSK, extra ...dtls.ServerOption) *relay {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tap := &tapConn{PacketConn: pc}
	r := &relay{t: t, tap: tap, backend: backend, established: make(map[string]*dtls.Conn)}
	tap.onRead = r.clientHello
	opts := append([]dtls.ServerOption{
		dtls.WithPSK(nil, func(ids [][]byte) (*dtls.PSK, error) {
			for _, id := range ids {
				if bytes.Equal(id, psk.Identity) {
					return &psk, nil
				}
			}
			return nil, nil
		}),
		dtls.WithCipherSuites(ciphersuite.TLS_AES_128_GCM_SHA256, ciphersuite.TLS_AES_256_GCM_SHA384, ciphersuite.TLS_PSK_WITH_AES_128_CCM_8),
		dtls.WithConnectionID(dtls.RandomCIDGenerator(8), dtls.CIDPathMigrationReject),
		dtls.WithLoggerFactory(pionLoggerFactory{testLogger(t)}),
	}, extra...)
	ln, err := dtls.Listen(tap, opts...)
	if err != nil {
		t.Fatal(err)
	}
	r.ln = ln
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

func (r *relay) addr() string { return r.tap.LocalAddr().String() }

func (r *relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.conns = append(r.conns, c)
		r.mu.Unlock()
		r.wg.Add(1)
		go r.session(c.(*dtls.Conn))
	}
}

func (r *relay) session(c *dtls.Conn) {
	defer r.wg.Done()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := c.HandshakeContext(ctx)
	cancel()
	st, _ := c.ConnectionState()
	r.mu.Lock()
	r.errs = append(r.errs, err)
	if err == nil {
		r.states = append(r.states, st)
		r.remotes = append(r.remotes, c.RemoteAddr().String())
		r.established[c.RemoteAddr().String()] = c
	}
	r.mu.Unlock()
	if err != nil {
		return
	}
	up, err := net.DialUDP("udp", nil, r.backend.(*net.UDPAddr))
	if err != nil {
		return
	}
	defer up.Close()
	go func() {
		buf := make([]byte, 64*1024)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64*1024)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := up.Write(buf[:n]); err != nil {
			return
		}
	}
}

// clientHello does what issue 9 asks of the gateway, simply: a ClientHello
// (epoch 0) from the address of an established session starts a new
// handshake. The old session is stopped silently (ExportState: no alert),
// which also removes its route, so the listener hands the datagram to a new
// connection.
func (r *relay) clientHello(p []byte, from net.Addr) {
	if !slices.Contains(plaintextHandshakeTypes(p), handshake.TypeClientHello) {
		return
	}
	r.mu.Lock()
	c := r.established[from.String()]
	delete(r.established, from.String())
	if c != nil {
		r.replaced++
	}
	r.mu.Unlock()
	if c != nil {
		_, _ = c.ExportState()
	}
}

// forget stops every established session silently, as a gateway restart
// does: the devices' next records find no session and are dropped.
func (r *relay) forget() {
	r.mu.Lock()
	conns := r.established
	r.established = make(map[string]*dtls.Conn)
	r.mu.Unlock()
	for _, c := range conns {
		_, _ = c.ExportState()
	}
}

// handshakesFrom returns the remote addresses of the completed handshakes.
func (r *relay) handshakesFrom() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.remotes)
}

func (r *relay) replacedSessions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.replaced
}

// sessions returns the server-side states of completed handshakes and the
// errors of all handshakes so far.
func (r *relay) sessions() ([]dtls.State, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, err := range r.errs {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return append([]dtls.State(nil), r.states...), errs
}

func (r *relay) close() {
	_ = r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	_ = r.tap.Close()
	r.wg.Wait()
}

// tapConn records every datagram the server reads and writes.
type tapConn struct {
	net.PacketConn
	onRead  func(p []byte, from net.Addr) // called before the listener sees p
	mu      sync.Mutex
	in, out [][]byte
}

func (c *tapConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	if err == nil {
		c.mu.Lock()
		c.in = append(c.in, bytes.Clone(p[:n]))
		c.mu.Unlock()
		if c.onRead != nil {
			c.onRead(p[:n], addr)
		}
	}
	return n, addr, err
}

func (c *tapConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	c.out = append(c.out, bytes.Clone(p))
	c.mu.Unlock()
	return c.PacketConn.WriteTo(p, addr)
}

// datagrams returns what the server read (from clients) and wrote.
func (c *tapConn) datagrams() (in, out [][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.in...), append([][]byte(nil), c.out...)
}
