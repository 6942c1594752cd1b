package devsim

import (
	"errors"
	"net"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

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
