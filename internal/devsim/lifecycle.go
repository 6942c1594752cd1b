package devsim

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// What a device does over its life, beyond its first handshake (issue 9):
// every new handshake comes from the same UDP socket (see port).

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
	d.drop(errSessionReplaced)
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
	d.drop(errSessionReplaced)
	return d.handshake(ctx, HandshakeIdle)
}
