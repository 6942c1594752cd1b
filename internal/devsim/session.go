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
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
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
	s.stopping.Store(true)
	_ = s.pc.Close() // detach first: the close_notify of conn.Close cannot get out
	_ = s.conn.Close()
	<-s.readerDone
}

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

// Rehandshake runs a new DTLS handshake from the device's UDP address and
// port, abandoning the current session without close_notify, and keeps the
// CoAP and LwM2M state (registration location, observations, Message IDs):
// the next Update goes to the registration the device already has. On
// failure the device has no session until the next successful handshake.
func (d *Device) Rehandshake(ctx context.Context) error {
	return d.rehandshake(ctx, HandshakeRehandshake)
}

func (d *Device) rehandshake(ctx context.Context, reason HandshakeReason) error {
	d.hsMu.Lock()
	defer d.hsMu.Unlock()
	if _, err := d.current(); errors.Is(err, ErrClosed) {
		return err
	}
	d.drop(fmt.Errorf("%w: re-handshaking", ErrSessionLost))
	return d.handshake(ctx, reason)
}

// Reboot does what a device that loses power does: it forgets its DTLS
// session (no close_notify) and its CoAP and LwM2M state (registration
// location, observations, pending exchanges, which fail with
// ErrSessionLost), then, from the same UDP address and port, runs a new
// handshake and Registers again. The resources (the device's "flash") are
// kept.
func (d *Device) Reboot(ctx context.Context) error {
	d.hsMu.Lock()
	if _, err := d.current(); errors.Is(err, ErrClosed) {
		d.hsMu.Unlock()
		return err
	}
	lost := fmt.Errorf("%w: device rebooted", ErrSessionLost)
	d.drop(lost)
	d.ex.reset(lost)
	d.mu.Lock()
	d.location, d.observations, d.observeSeq = "", nil, 0
	d.mu.Unlock()
	err := d.handshake(ctx, HandshakeReboot)
	d.hsMu.Unlock()
	if err != nil {
		return err
	}
	_, err = d.Register(ctx)
	return err
}

// Reconnect is what a LwM2M client does when it finds its session gone (a
// gateway restart, an alert): a new handshake from the same UDP address and
// port, then an Update to its registration location, and a new Register if
// the Update is answered 4.04 Not Found, or if it has no location. Any
// other answer to the Update, 4.03 Forbidden included, is a *CodeError.
func (d *Device) Reconnect(ctx context.Context) error {
	if err := d.rehandshake(ctx, HandshakeReconnect); err != nil {
		return err
	}
	return d.updateOrRegister(ctx)
}

// Sleep turns the device's radio off for dur: it sends nothing, and every
// datagram sent to it is lost (the gateway's or backend's requests go
// unanswered), as for a device in deep sleep or LwM2M queue mode. The
// session is kept. It returns ctx.Err() if ctx ends first. Sleeping counts
// as idle time for RehandshakeIdle, so the next request after a Sleep
// longer than RehandshakeIdle runs a new handshake first.
func (d *Device) Sleep(ctx context.Context, dur time.Duration) error {
	if _, err := d.current(); errors.Is(err, ErrClosed) {
		return err
	}
	d.port.setAsleep(true)
	defer d.port.setAsleep(false)
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	d.mu.Lock()
	d.stats.Sleeps++
	d.mu.Unlock()
	return nil
}

// maybeRehandshake runs the idle re-handshake (RehandshakeIdle) if due.
func (d *Device) maybeRehandshake(ctx context.Context) error {
	limit := d.cfg.RehandshakeIdle
	if limit <= 0 || d.idle() <= limit {
		return nil
	}
	d.hsMu.Lock()
	defer d.hsMu.Unlock()
	if d.idle() <= limit { // another request just did it
		return nil
	}
	if _, err := d.current(); errors.Is(err, ErrClosed) {
		return err
	}
	d.drop(fmt.Errorf("%w: re-handshaking", ErrSessionLost))
	return d.handshake(ctx, HandshakeIdle)
}

// Stats returns what the device lived through so far.
func (d *Device) Stats() DeviceStats {
	d.mu.Lock()
	st := d.stats
	d.mu.Unlock()
	st.LostWhileAsleep = d.port.lostIn.Load() + d.port.lostOut.Load()
	return st
}

// LossStats returns what DeviceConfig.Loss did to the device's datagrams
// (zero without Loss).
func (d *Device) LossStats() LossStats {
	if d.lossy == nil {
		return LossStats{}
	}
	return d.lossy.Stats()
}

// State returns the DTLS connection state of the current session
// (negotiated version, cipher suite, SNI, ...); zero without a session.
func (d *Device) State() dtls.State {
	s, err := d.current()
	if err != nil {
		return dtls.State{}
	}
	st, _ := s.conn.ConnectionState()
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

// LocalAddr returns the device's UDP address; it never changes.
func (d *Device) LocalAddr() net.Addr { return d.port.pc.LocalAddr() }

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

// Close sends close_notify on the current session, closes the socket, fails
// pending exchanges with ErrClosed and waits for the reader goroutine. It is
// idempotent.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.ex.close(ErrClosed)
		d.mu.Lock()
		d.closed = true
		s := d.sess
		d.mu.Unlock()
		if s != nil {
			s.stopping.Store(true)
			d.closeErr = s.conn.Close()
			<-s.readerDone
		}
		if err := d.port.close(); d.closeErr == nil && !errors.Is(err, net.ErrClosed) {
			d.closeErr = err
		}
	})
	return d.closeErr
}
