package devsim

import (
	"context"
	"crypto"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"github.com/pion/dtls/v4/pkg/protocol"
	"go.uber.org/zap"
)

// Key-exchange modes of DTLS 1.3 PSK handshakes (RFC 8446 §4.2.9).
const (
	ModePSKDHE = "psk_dhe_ke" // PSK with (EC)DHE: forward secrecy (R3 default)
	ModePSK    = "psk_ke"     // PSK only: no forward secrecy
)

// DeviceConfig describes one simulated device. Only Server, Identity, Key and
// Endpoint are required; every other zero value means the stated default.
type DeviceConfig struct {
	// Server is the gateway's UDP address, host:port.
	Server string
	// Identity is the external PSK identity. Never logged.
	Identity []byte
	// Key is the PSK. Never logged.
	Key []byte
	// Hash is the DTLS 1.3 PSK hash, crypto.SHA256 or crypto.SHA384; zero is
	// SHA-256. With SHA-384 the default 1.3 suite is TLS_AES_256_GCM_SHA384.
	Hash crypto.Hash
	// Version pins the DTLS version: "1.3" (default) or "1.2".
	Version string
	// Mode is the comma-separated list of DTLS 1.3 PSK key-exchange modes to
	// offer, in order: "psk_dhe_ke" (default), "psk_ke" (offer only psk_ke),
	// or "psk_dhe_ke,psk_ke" (offer both, as pion does by default). Ignored
	// with DTLS 1.2, where the cipher suite decides.
	Mode string
	// CipherSuites to offer. Default: TLS_AES_128_GCM_SHA256 for 1.3 (or
	// TLS_AES_256_GCM_SHA384 with Hash SHA-384), TLS_PSK_WITH_AES_128_CCM_8
	// for 1.2 (RFC 7925).
	CipherSuites []ciphersuite.ID
	// Groups are the key-exchange groups, first one with a key share.
	// Default X25519 only: pion's client default also lists X25519MLKEM768,
	// which a pion server prefers and asks for with a HelloRetryRequest.
	Groups []elliptic.Curve
	// ServerName is the SNI to send; empty sends none.
	ServerName string
	// NoConnectionID disables Connection IDs (RFC 9146, RFC 9147 §9). By
	// default the device supports them: it uses the CID the gateway gives
	// it, so a NAT rebinding does not lose the session.
	NoConnectionID bool
	// ConnectionIDLength is the length of the CID the device asks the
	// gateway to send to it; 0 (default) asks for none (pion's
	// OnlySendCIDGenerator).
	ConnectionIDLength int
	// Endpoint is the LwM2M endpoint client name (ep).
	Endpoint string
	// Lifetime is the registration lifetime (lt), whole seconds; default 1h.
	Lifetime time.Duration
	// Binding is the LwM2M binding (b); default "U".
	Binding string
	// Resources answer the backend's GETs, path to value, e.g. "/3/0/0" ->
	// "ACME Corp". Default: a small Device object (DefaultResources). The
	// Register payload lists the object instances of these paths.
	Resources map[string][]byte
	// HandshakeTimeout bounds Dial's handshake; default 10s.
	HandshakeTimeout time.Duration
	// ACKTimeout is CoAP's ACK_TIMEOUT; default 2s (RFC 7252 §4.8).
	ACKTimeout time.Duration
	// MaxRetransmit is CoAP's MAX_RETRANSMIT; default 4; negative is 0.
	// (Zero is the default, so 0 retransmissions need a negative value.)
	MaxRetransmit int
	// Logger receives Debug events and pion's logs; nil means no logs.
	Logger *zap.Logger
}

// DefaultResources returns the resources a device has when DeviceConfig
// leaves Resources nil: a Server object instance (/1/0) and a Device object
// instance (/3/0) whose serial number is the endpoint name.
func DefaultResources(endpoint string) map[string][]byte {
	return map[string][]byte{
		"/1/0/0": []byte("1"),    // Short Server ID
		"/1/0/1": []byte("3600"), // Lifetime
		"/1/0/7": []byte("U"),    // Binding
		"/3/0/0": []byte("ACME Corp"),
		"/3/0/1": []byte("devsim"),
		"/3/0/2": []byte(endpoint),
		"/3/0/3": []byte("1.0"),
		"/3/0/9": []byte("100"), // Battery Level
	}
}

// Device is a simulated LwM2M client connected to the gateway over DTLS.
// Its methods are safe for concurrent use. A reader goroutine, started by
// Dial and stopped by Close, answers the backend's requests.
type Device struct {
	cfg  DeviceConfig
	log  *zap.Logger
	conn *dtls.Conn
	ex   *exchanger

	mu           sync.Mutex
	location     string
	resources    map[string][]byte
	observations []observation // most recent last
	observeSeq   uint32
	served       atomic.Int64

	readerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error
}

// observation is one RFC 7641 observation the backend established.
type observation struct {
	token string
	path  string
}

// Dial opens a UDP socket, runs the DTLS handshake with the gateway (bounded
// by ctx and HandshakeTimeout) and starts the reader goroutine. A failed
// handshake returns an error and leaves nothing open.
func Dial(ctx context.Context, cfg DeviceConfig) (*Device, error) {
	opts, err := cfg.dtlsOptions()
	if err != nil {
		return nil, err
	}
	raddr, err := net.ResolveUDPAddr("udp", cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("devsim: resolve %q: %w", cfg.Server, err)
	}
	// An unconnected socket: pion writes with WriteTo, which a connected
	// one refuses. Bound to loopback when the gateway is there, so a test
	// opens nothing on other interfaces.
	var laddr *net.UDPAddr
	if raddr.IP.IsLoopback() {
		laddr = &net.UDPAddr{IP: raddr.IP}
	}
	pconn, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("devsim: %w", err)
	}
	conn, err := dtls.Client(pconn, raddr, opts...)
	if err != nil {
		_ = pconn.Close()
		return nil, fmt.Errorf("devsim: dtls client: %w", err)
	}
	timeout := cfg.HandshakeTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		_ = conn.Close() // also closes pconn
		return nil, fmt.Errorf("devsim: handshake with %s: %w", raddr, err)
	}

	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	resources := cfg.Resources
	if resources == nil {
		resources = DefaultResources(cfg.Endpoint)
	}
	d := &Device{
		cfg:        cfg,
		log:        log.With(zap.String("endpoint", cfg.Endpoint), zap.Stringer("remote", raddr)),
		conn:       conn,
		ex:         newExchanger(cfg.ACKTimeout, maxRetransmit(cfg.MaxRetransmit)),
		resources:  cloneResources(resources),
		readerDone: make(chan struct{}),
	}
	st, _ := conn.ConnectionState()
	d.log.Debug("dtls handshake done", zap.Stringer("version", versionName(st.NegotiatedVersion())), zap.Stringer("suite", st.CipherSuiteID))
	go d.readLoop()
	return d, nil
}

func maxRetransmit(n int) int {
	switch {
	case n == 0:
		return DefaultMaxRetransmit
	case n < 0:
		return 0
	}
	return n
}

func cloneResources(in map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(in))
	for k, v := range in {
		out[k] = slices.Clone(v)
	}
	return out
}

// State returns the DTLS connection state (negotiated version, cipher suite,
// SNI, ...).
func (d *Device) State() dtls.State {
	st, _ := d.conn.ConnectionState()
	return st
}

// NegotiatedVersion returns the DTLS version of the session.
func (d *Device) NegotiatedVersion() protocol.Version {
	st := d.State()
	return st.NegotiatedVersion()
}

// CipherSuiteID returns the negotiated cipher suite.
func (d *Device) CipherSuiteID() ciphersuite.ID {
	return d.State().CipherSuiteID
}

// LocalAddr returns the device's UDP address.
func (d *Device) LocalAddr() net.Addr { return d.conn.LocalAddr() }

// Endpoint returns the LwM2M endpoint name.
func (d *Device) Endpoint() string { return d.cfg.Endpoint }

// Location returns the registration location, e.g. "/rd/5a3f", or "" when
// not registered.
func (d *Device) Location() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.location
}

// Served returns how many backend requests the device has answered
// (duplicates not counted).
func (d *Device) Served() int { return int(d.served.Load()) }

// Close sends close_notify, closes the socket, fails pending exchanges with
// ErrClosed and waits for the reader goroutine. It is idempotent.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.ex.close(ErrClosed)
		d.closeErr = d.conn.Close()
		<-d.readerDone
	})
	return d.closeErr
}

// send writes one CoAP message as one DTLS record.
func (d *Device) send(raw []byte) error {
	if _, err := d.conn.Write(raw); err != nil {
		return fmt.Errorf("devsim: write: %w", err)
	}
	return nil
}

// readLoop reads until the connection closes, then fails pending exchanges.
func (d *Device) readLoop() {
	defer close(d.readerDone)
	buf := make([]byte, 64*1024)
	for {
		n, err := d.conn.Read(buf)
		if err != nil {
			d.log.Debug("dtls read stopped", zap.Error(err))
			d.ex.close(ErrClosed)
			return
		}
		m, err := decode(buf[:n])
		if err != nil {
			d.log.Debug("dropping malformed coap message", zap.Error(err))
			continue
		}
		d.ex.receive("", m, d.send, d.serve, nil)
	}
}
