package devsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/protocol/alert"
	"go.uber.org/zap"
)

// Device is a simulated LwM2M client connected to the gateway over DTLS.
// Its methods are safe for concurrent use. The device owns one UDP socket
// for its whole life and runs one DTLS session at a time over it; a reader
// goroutine per session answers the backend's requests. Close stops
// everything.
type Device struct {
	cfg   DeviceConfig
	log   *zap.Logger
	opts  []dtls.ClientOption
	raddr *net.UDPAddr
	port  *port
	lossy *LossyConn // nil without cfg.Loss
	ex    *exchanger

	hsMu sync.Mutex // one handshake at a time

	mu           sync.Mutex
	sess         *session // nil when the last handshake failed
	sessErr      error    // why sess is nil
	closed       bool
	location     string
	resources    map[string][]byte
	observations []observation // most recent last
	observeSeq   uint32
	stats        DeviceStats
	served       atomic.Int64
	lastActive   atomic.Int64 // unix nanoseconds of the last application data sent or received

	closeOnce sync.Once
	closeErr  error
}

// session is one DTLS association of the device over its port.
type session struct {
	conn       *dtls.Conn
	pc         *portConn
	readerDone chan struct{}
	stopping   atomic.Bool                  // the device ends it: no close_notify, not "lost"
	replaced   atomic.Bool                  // ... to handshake again (errSessionReplaced)
	confirmed  atomic.Bool                  // application data came back: the gateway kept it
	alert      *atomic.Pointer[alert.Alert] // the last alert received, if any
	err        error                        // why the gateway ended it; set before readerDone closes
}

// observation is one RFC 7641 observation the backend established.
type observation struct {
	token string
	path  string
}

// Dial opens the device's UDP socket, runs the DTLS handshake with the
// gateway (bounded by ctx and HandshakeTimeout) and starts the reader
// goroutine. A failed handshake returns an error (wrapping the gateway's
// alert, if it sent one: see AlertOf) and leaves nothing open.
func Dial(ctx context.Context, cfg DeviceConfig) (*Device, error) {
	opts, err := cfg.dtlsOptions()
	if err != nil {
		return nil, err
	}
	if cfg.Loss != nil {
		if err := cfg.Loss.Validate(); err != nil {
			return nil, err
		}
	}
	raddr, err := net.ResolveUDPAddr("udp", cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("devsim: resolve %q: %w", cfg.Server, err)
	}
	// An unconnected socket: pion writes with WriteTo, which a connected
	// one refuses.
	var laddr *net.UDPAddr
	switch {
	case cfg.LocalAddr != "":
		if laddr, err = net.ResolveUDPAddr("udp", cfg.LocalAddr); err != nil {
			return nil, fmt.Errorf("devsim: DeviceConfig.LocalAddr %q: %w", cfg.LocalAddr, err)
		}
	case raddr.IP.IsLoopback():
		laddr = &net.UDPAddr{IP: raddr.IP}
	}
	sock, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("devsim: %w", err)
	}
	var pc net.PacketConn = sock
	var lossy *LossyConn
	if cfg.Loss != nil {
		if lossy, err = NewLossyConn(sock, *cfg.Loss); err != nil {
			_ = sock.Close()
			return nil, err
		}
		pc = lossy
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
		cfg:       cfg,
		log:       log.With(zap.String("endpoint", cfg.Endpoint), zap.Stringer("remote", raddr)),
		opts:      opts,
		raddr:     raddr,
		port:      newPort(pc),
		lossy:     lossy,
		ex:        newExchanger(cfg.ACKTimeout, maxRetransmit(cfg.MaxRetransmit)),
		resources: cloneResources(resources),
	}
	d.hsMu.Lock()
	err = d.handshake(ctx, HandshakeDial)
	d.hsMu.Unlock()
	if err != nil {
		_ = d.port.close()
		return nil, err
	}
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

// handshake runs a new DTLS handshake on a fresh view of the port and makes
// it the device's session. The caller holds hsMu and has dropped the
// previous session, if any.
func (d *Device) handshake(ctx context.Context, reason HandshakeReason) error {
	start := time.Now()
	err := d.runHandshake(ctx)
	if d.cfg.OnHandshake != nil {
		d.cfg.OnHandshake(HandshakeEvent{Reason: reason, Duration: time.Since(start), Err: err})
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.stats.HandshakeErrors++
		d.sess, d.sessErr = nil, fmt.Errorf("%w: %s handshake failed: %w", ErrSessionLost, reason, err)
		return err
	}
	d.stats.Handshakes++
	switch reason {
	case HandshakeIdle:
		d.stats.IdleRehandshakes++
	case HandshakeReboot:
		d.stats.Reboots++
	case HandshakeReconnect:
		d.stats.Reconnects++
	}
	return nil
}

func (d *Device) runHandshake(ctx context.Context) error {
	pc := d.port.attach()
	received := new(atomic.Pointer[alert.Alert])
	log := d.cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	opts := append(slices.Clone(d.opts), dtls.WithLoggerFactory(alertCatcher{base: pionLoggerFactory{log}, last: received}))
	conn, err := dtls.Client(pc, d.raddr, opts...)
	if err != nil {
		_ = pc.Close()
		return fmt.Errorf("devsim: dtls client: %w", err)
	}
	timeout := d.cfg.HandshakeTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		_ = pc.Close() // first: nothing more goes out
		_ = conn.Close()
		return fmt.Errorf("devsim: handshake with %s: %w", d.raddr, err)
	}
	s := &session{conn: conn, pc: pc, alert: received, readerDone: make(chan struct{})}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		_ = conn.Close()
		return ErrClosed
	}
	d.sess, d.sessErr = s, nil
	d.mu.Unlock()
	d.touch()
	st, _ := conn.ConnectionState()
	d.log.Debug("dtls handshake done", zap.Stringer("version", versionName(st.NegotiatedVersion())),
		zap.Stringer("suite", st.CipherSuiteID), zap.Stringer("local", pc.LocalAddr()))
	go d.readLoop(s)
	return nil
}

// drop ends the current session the way a rebooting device does: no
// close_notify, nothing more sent or read. The caller holds hsMu.
func (d *Device) drop(why error) {
	d.mu.Lock()
	s := d.sess
	d.sess, d.sessErr = nil, why
	d.mu.Unlock()
	if s == nil {
		return
	}
	s.replaced.Store(errors.Is(why, errSessionReplaced))
	s.stopping.Store(true)
	_ = s.pc.Close() // detach first: the close_notify of conn.Close cannot get out
	_ = s.conn.Close()
	<-s.readerDone
}

// errSessionReplaced: the device itself dropped the session to handshake
// again (Reconnect, an idle re-handshake) while an exchange was using it.
var errSessionReplaced = fmt.Errorf("%w: re-handshaking", ErrSessionLost)

// current returns the session, or why there is none.
func (d *Device) current() (*session, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return nil, ErrClosed
	case d.sess == nil:
		return nil, d.sessErr
	}
	return d.sess, nil
}

func (d *Device) touch() { d.lastActive.Store(time.Now().UnixNano()) }

// idle returns how long the device has neither sent nor received
// application data.
func (d *Device) idle() time.Duration {
	return time.Since(time.Unix(0, d.lastActive.Load()))
}

// writeGrace bounds how long a failed write waits for the session's reader
// to report that the gateway ended the session.
const writeGrace = 2 * time.Second

// send writes one CoAP message as one DTLS record on the current session.
func (d *Device) send(raw []byte) error {
	s, err := d.current()
	if err != nil {
		return err
	}
	return d.sendOn(s, raw, true)
}

// sendOn writes on session s. If the connection closed under the write and
// wait is set, it waits for s's reader to say why; the reader itself (which
// answers the backend's requests) must not wait for itself.
func (d *Device) sendOn(s *session, raw []byte, wait bool) error {
	select {
	case <-s.readerDone:
		if s.err != nil {
			return s.err
		}
		return fmt.Errorf("%w: session ended", ErrSessionLost)
	default:
	}
	if _, err := s.conn.Write(raw); err != nil {
		if wait {
			// The connection may have closed under the write (an alert
			// just arrived): its reader then says why, and ends at once.
			// A write error that left the connection open (a transient
			// socket error) is returned after a short grace.
			grace := time.NewTimer(writeGrace)
			select {
			case <-s.readerDone:
				if s.err != nil {
					grace.Stop()
					return s.err
				}
			case <-grace.C:
			}
			grace.Stop()
		}
		if s.replaced.Load() {
			// Closed under the write by the device's own re-handshake.
			return fmt.Errorf("devsim: write: %w", errSessionReplaced)
		}
		return fmt.Errorf("devsim: write: %w", err)
	}
	d.touch()
	return nil
}

// readLoop reads one session until it ends. If the gateway ended it, the
// exchanges waiting for an answer fail with ErrSessionLost at once.
func (d *Device) readLoop(s *session) {
	defer close(s.readerDone)
	reply := func(raw []byte) error { return d.sendOn(s, raw, false) }
	buf := make([]byte, 64*1024)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			if s.stopping.Load() {
				return
			}
			if a := s.alert.Load(); a != nil {
				err = fmt.Errorf("%w: %w", a, err)
			}
			refused := !s.confirmed.Load()
			if refused {
				s.err = fmt.Errorf("%w: %w: %w", ErrSessionLost, ErrRefused, err)
			} else {
				s.err = fmt.Errorf("%w: %w", ErrSessionLost, err)
			}
			d.mu.Lock()
			d.stats.SessionsLost++
			if refused {
				d.stats.Refused++
			}
			d.mu.Unlock()
			d.log.Debug("dtls session lost", zap.Error(err), zap.Bool("refused", refused))
			d.ex.failPending(s.err)
			return
		}
		s.confirmed.Store(true)
		d.touch()
		m, err := decode(buf[:n])
		if err != nil {
			d.log.Debug("dropping malformed coap message", zap.Error(err))
			continue
		}
		d.ex.receive("", m, reply, d.serve, nil)
	}
}
