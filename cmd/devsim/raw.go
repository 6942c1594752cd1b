package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"github.com/pion/dtls/v4/pkg/protocol"
	"github.com/pion/dtls/v4/pkg/protocol/alert"
	extension13 "github.com/pion/dtls/v4/pkg/protocol/extension/dtls13"
	"github.com/pion/dtls/v4/pkg/protocol/handshake"
	"github.com/pion/logging"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// Raw mode speaks to any DTLS PSK CoAP server: a handshake, then confirmable
// CoAP requests of a fixed size, each answered by any message that carries
// its token (a piggybacked or separate response, or the request itself
// echoed back by an echo server). No LwM2M, no retransmission: on loopback
// a request without an answer within --timeout is an error of its own kind.

// errRawClosed is returned by requests pending when a raw client closes.
var errRawClosed = errors.New("connection closed")

// rawTokenLen is the token length of raw requests: 4 random bytes naming
// the client, 4 counting its requests.
const rawTokenLen = 8

// rawRequest builds the template of a raw request: a CON request with
// method and path, Message ID and token to be patched in, and a payload of
// 'x' bytes that brings the whole CoAP message to size bytes when possible.
func rawRequest(method, path string, size int) ([]byte, error) {
	code, ok := map[string]codes.Code{"GET": codes.GET, "POST": codes.POST, "PUT": codes.PUT, "DELETE": codes.DELETE}[strings.ToUpper(method)]
	if !ok {
		return nil, fmt.Errorf("--method %q: want GET, POST, PUT or DELETE", method)
	}
	m := message.Message{Type: message.Confirmable, Code: code, Token: make(message.Token, rawTokenLen), MessageID: 0}
	for seg := range strings.SplitSeq(strings.Trim(path, "/"), "/") {
		if seg != "" {
			m.Options = m.Options.Add(message.Option{ID: message.URIPath, Value: []byte(seg)})
		}
	}
	head, err := encodeCoAP(m)
	if err != nil {
		return nil, err
	}
	if pad := size - len(head) - 1; pad > 0 { // 1: the payload marker
		m.Payload = []byte(strings.Repeat("x", pad))
		return encodeCoAP(m)
	}
	return head, nil
}

func encodeCoAP(m message.Message) ([]byte, error) {
	n, err := coder.DefaultCoder.Size(m)
	if err != nil {
		return nil, err
	}
	out := make([]byte, n)
	if _, err := coder.DefaultCoder.Encode(m, out); err != nil {
		return nil, err
	}
	return out, nil
}

// rawClient is one raw-mode device: a DTLS connection (or, with --no-dtls,
// a connected UDP socket) and the requests waiting for an answer.
type rawClient struct {
	conn   net.Conn
	tmpl   []byte
	prefix uint32
	seq    atomic.Uint32

	lossy     *devsim.LossyConn // nil without --loss
	alert     func() (alert.Alert, bool)
	onRefused func(error) // the session ended before any answer came back
	gotData   atomic.Bool

	mu      sync.Mutex
	pending map[uint64]chan struct{}
	closed  bool
	lost    bool // the server ended the session
	refused bool // ... before anything came back

	readerDone chan struct{}
	closeOnce  sync.Once
}

func newRawClient(conn net.Conn, tmpl []byte, lossy *devsim.LossyConn, alertOf func() (alert.Alert, bool), onRefused func(error)) *rawClient {
	var p [4]byte
	_, _ = rand.Read(p[:])
	c := &rawClient{
		conn: conn, tmpl: tmpl, prefix: binary.BigEndian.Uint32(p[:]),
		lossy: lossy, alert: alertOf, onRefused: onRefused,
		pending: make(map[uint64]chan struct{}), readerDone: make(chan struct{}),
	}
	c.seq.Store(binary.BigEndian.Uint32(p[:]) * 7919) // random first Message ID
	go c.readLoop()
	return c
}

func (c *rawClient) setup(context.Context, stepFunc) error { return nil }

// do sends one request and waits for the message that carries its token.
func (c *rawClient) do(ctx context.Context, _ string) error {
	n := c.seq.Add(1)
	tok := uint64(c.prefix)<<32 | uint64(n)
	msg := slices.Clone(c.tmpl)
	binary.BigEndian.PutUint16(msg[2:4], uint16(n))
	binary.BigEndian.PutUint64(msg[4:4+rawTokenLen], tok)
	done := make(chan struct{})
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errRawClosed
	}
	c.pending[tok] = done
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, tok)
		c.mu.Unlock()
	}()
	if _, err := c.conn.Write(msg); err != nil {
		if _, plain := c.conn.(*net.UDPConn); plain {
			return err
		}
		// The server may have just ended the session: its reader then
		// ends at once and records why (a refusal). A write error that
		// left the connection open is returned after a short grace.
		grace := time.NewTimer(2 * time.Second)
		defer grace.Stop()
		select {
		case <-c.readerDone:
			return errRawClosed
		case <-grace.C:
			return err
		}
	}
	select {
	case <-done:
		return nil
	case <-c.readerDone:
		return errRawClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *rawClient) readLoop() {
	defer close(c.readerDone)
	buf := make([]byte, 4096)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, dtls.ErrConnClosed) || c.isClosed() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Plain UDP: ICMP port unreachable and the like; keep reading
			// until Close unless the socket is gone.
			if _, ok := c.conn.(*net.UDPConn); ok {
				continue
			}
			c.ended(err)
			return
		}
		c.gotData.Store(true)
		p := buf[:n]
		if n < 4+rawTokenLen || p[0]>>6 != 1 || int(p[0]&0x0f) != rawTokenLen {
			continue // not one of ours (an empty ACK, say)
		}
		tok := binary.BigEndian.Uint64(p[4 : 4+rawTokenLen])
		c.mu.Lock()
		if done, ok := c.pending[tok]; ok {
			delete(c.pending, tok)
			close(done)
		}
		c.mu.Unlock()
	}
}

// ended records that the server ended the session; one ended before any
// answer came back was refused after its handshake (issue 13) and is
// reported to onRefused, with the alert when there was one.
func (c *rawClient) ended(err error) {
	refused := !c.gotData.Load()
	c.mu.Lock()
	c.lost, c.refused = true, refused
	c.mu.Unlock()
	if !refused || c.onRefused == nil {
		return
	}
	if c.alert != nil {
		if a, ok := c.alert(); ok {
			err = fmt.Errorf("%w: %w", &a, err)
		}
	}
	c.onRefused(fmt.Errorf("%w: %w", devsim.ErrRefused, err))
}

func (c *rawClient) stats() (devsim.DeviceStats, devsim.LossStats) {
	var st devsim.DeviceStats
	c.mu.Lock()
	if c.lost {
		st.SessionsLost = 1
	}
	if c.refused {
		st.Refused = 1
	}
	c.mu.Unlock()
	if c.lossy == nil {
		return st, devsim.LossStats{}
	}
	return st, c.lossy.Stats()
}

func (c *rawClient) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *rawClient) close(context.Context) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		_ = c.conn.Close()
		<-c.readerDone
	})
}

// dialRaw opens one raw-mode device: the DTLS handshake with key k and
// handshake p, or with plain a connected UDP socket. Against a loopback
// server the socket is bound to loopback: to laddr when given (--source-ips,
// --fresh-ips), else to the server's address, so that a server's
// per-source-IP limits see many devices, not one, and the ephemeral ports of
// one address do not run out. loss (--loss) impairs the DTLS socket's path.
func dialRaw(ctx context.Context, o *options, laddrStr string, loss *devsim.Loss, p *profile, k pskstore.Key, tmpl []byte, onRefused func(error)) (client, error) {
	raddr, err := net.ResolveUDPAddr("udp", o.server)
	if err != nil {
		return nil, err
	}
	var laddr *net.UDPAddr
	switch {
	case laddrStr != "":
		if laddr, err = net.ResolveUDPAddr("udp", laddrStr); err != nil {
			return nil, err
		}
	case raddr.IP.IsLoopback():
		laddr = &net.UDPAddr{IP: raddr.IP} // open nothing beyond loopback
	}
	if o.noDTLS {
		uc, err := net.DialUDP("udp", laddr, raddr)
		if err != nil {
			return nil, err
		}
		return newRawClient(uc, tmpl, nil, nil, nil), nil
	}
	sock, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, err
	}
	var pc net.PacketConn = sock
	var held *holdConn
	if o.hold {
		held = &holdConn{UDPConn: sock}
		pc = held
	}
	var lossy *devsim.LossyConn
	if loss != nil {
		if lossy, err = devsim.NewLossyConn(sock, *loss); err != nil {
			_ = sock.Close()
			return nil, err
		}
		pc = lossy
	}
	logs, alertOf := devsim.NewAlertRecorder()
	opts := append(dtlsOptions(p, k, o.serverName), dtls.WithLoggerFactory(logs))
	if o.flightInterval > 0 {
		opts = append(opts, dtls.WithFlightInterval(o.flightInterval))
	}
	conn, err := dtls.Client(pc, raddr, opts...)
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = conn.Close() // also closes pc
		return nil, err
	}
	if held != nil {
		// Drop pion's state without a word to the server; keep the socket.
		held.muted.Store(true)
		_ = conn.Close()
		return &heldClient{sock: sock}, nil
	}
	return newRawClient(conn, tmpl, lossy, alertOf, onRefused), nil
}

// suiteFor is the cipher suite of handshake p with key k: a SHA-384 key
// needs TLS_AES_256_GCM_SHA384 in DTLS 1.3.
func suiteFor(p *profile, k pskstore.Key) ciphersuite.ID {
	if p.version == "1.3" && k.Hash == crypto.SHA384 {
		return ciphersuite.TLS_AES_256_GCM_SHA384
	}
	return p.suite
}

var quietPion = &logging.DefaultLoggerFactory{DefaultLogLevel: logging.LogLevelDisabled}

// dtlsOptions are the pion client options of raw mode; they match what
// internal/devsim offers in LwM2M mode (X25519 only, Connection IDs
// accepted, one suite, the mode list of the profile).
func dtlsOptions(p *profile, k pskstore.Key, serverName string) []dtls.ClientOption {
	hash := k.Hash
	if hash == 0 {
		hash = crypto.SHA256
	}
	psk := dtls.PSK{Identity: k.Identity, Key: k.Secret, Hash: hash}
	opts := []dtls.ClientOption{
		dtls.WithPSK(func() ([]dtls.PSK, error) { return []dtls.PSK{psk}, nil }, nil),
		dtls.WithCipherSuites(suiteFor(p, k)),
		dtls.WithEllipticCurves(elliptic.X25519),
		dtls.WithConnectionID(dtls.OnlySendCIDGenerator(), dtls.CIDPathMigrationReject),
		dtls.WithLoggerFactory(quietPion),
	}
	if serverName != "" {
		opts = append(opts, dtls.WithServerName(serverName))
	}
	if p.version == "1.2" {
		return append(opts, dtls.WithMinVersion(protocol.Version1_2), dtls.WithMaxVersion(protocol.Version1_2))
	}
	mode := extension13.PSKDHEKE
	if p.mode == "psk_ke" {
		mode = extension13.PSKKE
	}
	return append(opts, dtls.WithMinVersion(protocol.Version1_3), dtls.WithMaxVersion(protocol.Version1_3),
		dtls.WithClientHelloMessageHook(offerMode(mode)))
}

// offerMode replaces the psk_key_exchange_modes extension pion sends
// (psk_dhe_ke, psk_ke) with one mode. pion computes the binders over the
// hooked message, and replacing in place keeps pre_shared_key last.
func offerMode(mode extension13.PSKKeyExchangeMode) func(handshake.MessageClientHello) handshake.Message {
	return func(hello handshake.MessageClientHello) handshake.Message {
		hello.Extensions = slices.Clone(hello.Extensions)
		for i, ext := range hello.Extensions {
			if _, ok := ext.(*extension13.PSKKeyExchangeModes); ok {
				hello.Extensions[i] = &extension13.PSKKeyExchangeModes{Modes: []extension13.PSKKeyExchangeMode{mode}}
			}
		}
		return &hello
	}
}
