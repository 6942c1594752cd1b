package devsim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol/handshake"
	"go.uber.org/zap"
)

// Relay is a minimal stand-in for the gateway, for tests of devsim itself
// and of the load tool: a pion/dtls/v4 PSK server (DTLS 1.2 and 1.3,
// Connection IDs) that forwards each session's datagrams to a backend over
// a UDP socket of its own, and the answers back. It enforces no policy.
//
// It does what issue 9 asks of the gateway, in the simplest way, so that
// reboots and re-handshakes from the same port can be tested without the
// gateway: a ClientHello (epoch 0) from the address of an established
// session stops that session silently and starts a new handshake. Forget
// stops every session silently, as a gateway restart does.
//
// Every datagram read and written is recorded (Datagrams), for tests that
// inspect the wire.
type Relay struct {
	ln      net.Listener
	tap     *tapConn
	backend *net.UDPAddr
	log     *zap.Logger

	mu          sync.Mutex
	conns       []net.Conn
	handshakes  []RelayHandshake
	errs        []error
	established map[string]*dtls.Conn // by remote address
	replaced    int
	wg          sync.WaitGroup
}

// RelayHandshake is one completed handshake of a Relay.
type RelayHandshake struct {
	Remote string // the device's address
	State  dtls.State
}

// RelayConfig configures NewRelay.
type RelayConfig struct {
	// Backend is where sessions are forwarded (plain CoAP over UDP).
	Backend net.Addr
	// PSK returns the key of an identity, nil if unknown. The Hash of the
	// returned PSK must be the device's (the offer does not carry it).
	PSK func(identity []byte) *dtls.PSK
	// Options are appended to the server's (e.g. WithVerifyConnection to
	// refuse sessions after the handshake).
	Options []dtls.ServerOption
	// Logger receives pion's logs; nil means none.
	Logger *zap.Logger
}

// NewRelay listens on 127.0.0.1 with an ephemeral port and serves until
// Close.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	backend, ok := cfg.Backend.(*net.UDPAddr)
	if !ok || cfg.PSK == nil {
		return nil, errors.New("devsim: RelayConfig needs a UDP Backend and a PSK function")
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("devsim: relay: %w", err)
	}
	r := &Relay{tap: &tapConn{PacketConn: pc}, backend: backend, log: log, established: make(map[string]*dtls.Conn)}
	r.tap.onRead = r.clientHello
	opts := append([]dtls.ServerOption{
		dtls.WithPSK(nil, func(ids [][]byte) (*dtls.PSK, error) {
			for _, id := range ids {
				if psk := cfg.PSK(id); psk != nil {
					return psk, nil
				}
			}
			return nil, nil
		}),
		dtls.WithCipherSuites(ciphersuite.TLS_AES_128_GCM_SHA256, ciphersuite.TLS_AES_256_GCM_SHA384, ciphersuite.TLS_CHACHA20_POLY1305_SHA256,
			ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, ciphersuite.TLS_PSK_WITH_AES_128_CCM, ciphersuite.TLS_PSK_WITH_AES_128_GCM_SHA256,
			ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256),
		dtls.WithConnectionID(dtls.RandomCIDGenerator(8), dtls.CIDPathMigrationReject),
		dtls.WithLoggerFactory(pionLoggerFactory{log}),
	}, cfg.Options...)
	ln, err := dtls.Listen(r.tap, opts...)
	if err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("devsim: relay: %w", err)
	}
	r.ln = ln
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr returns the relay's UDP address.
func (r *Relay) Addr() net.Addr { return r.tap.LocalAddr() }

func (r *Relay) accept() {
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

func (r *Relay) session(c *dtls.Conn) {
	defer r.wg.Done()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := c.HandshakeContext(ctx)
	cancel()
	st, _ := c.ConnectionState()
	r.mu.Lock()
	r.errs = append(r.errs, err)
	if err == nil {
		r.handshakes = append(r.handshakes, RelayHandshake{Remote: c.RemoteAddr().String(), State: st})
		r.established[c.RemoteAddr().String()] = c
	}
	r.mu.Unlock()
	if err != nil {
		return
	}
	up, err := net.DialUDP("udp", nil, r.backend)
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

// clientHello replaces the established session of the ClientHello's
// sender, if any: the old one is stopped silently (ExportState: no alert),
// which also removes its route, so the listener hands the datagram to a new
// connection.
func (r *Relay) clientHello(p []byte, from net.Addr) {
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

// Forget stops every established session silently, as a gateway restart
// does: the devices' next records find no session and are dropped.
func (r *Relay) Forget() {
	r.mu.Lock()
	conns := r.established
	r.established = make(map[string]*dtls.Conn)
	r.mu.Unlock()
	for _, c := range conns {
		_, _ = c.ExportState()
	}
}

// Handshakes returns the completed handshakes so far, oldest first.
func (r *Relay) Handshakes() []RelayHandshake {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.handshakes)
}

// Errors returns the errors of the failed handshakes so far.
func (r *Relay) Errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, err := range r.errs {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Replaced returns how many live sessions a new ClientHello from the same
// address replaced.
func (r *Relay) Replaced() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.replaced
}

// Datagrams returns every datagram the relay read (from devices) and wrote.
func (r *Relay) Datagrams() (in, out [][]byte) { return r.tap.datagrams() }

// Close stops the relay and every session and waits for them.
func (r *Relay) Close() error {
	err := r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	_ = r.tap.Close()
	r.wg.Wait()
	return err
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
