package record

import (
	"fmt"
	"sync"
	"time"
)

// Datagram is what Open found in one datagram from the peer. Reuse one value
// across calls: Open resets it but keeps the capacity of Payloads, so the
// common one-record datagram allocates nothing.
type Datagram struct {
	// Payloads are the application data of the authenticated records, in
	// order. They alias the datagram Open was given.
	Payloads [][]byte

	// Authenticated: at least one record authenticated.
	Authenticated bool

	// Newer: an authenticated record was newer than any seen before (a
	// higher sequence number in the newest read epoch). Only then may the
	// gateway move the peer's address (RFC 9146 §6, RFC 9147 §9).
	Newer bool

	// Closed: the peer sent close_notify or a fatal alert; Alert is its
	// description. The Conn refuses further Open and Seal.
	Closed bool
	Alert  uint8

	// Replies are datagrams to send back to the peer now: a resent DTLS 1.2
	// final flight, DTLS 1.3 ACKs and our KeyUpdate.
	Replies [][]byte

	// KeysChanged: the write epoch changed (our KeyUpdate was acknowledged).
	// A gateway that persists snapshots persists one before it seals again,
	// so a restore never goes back to the old epoch.
	KeysChanged bool

	// Dropped counts the records dropped; DropErr is the first one's reason,
	// wrapping ErrMalformed, ErrReplay, ErrAuth, ErrEpoch, ErrCID or
	// ErrLimit.
	Dropped int
	DropErr error
}

func (d *Datagram) reset() {
	clear(d.Payloads)
	payloads := d.Payloads[:0]
	*d = Datagram{Payloads: payloads}
}

func (d *Datagram) drop(err error) {
	d.Dropped++
	if d.DropErr == nil {
		d.DropErr = err
	}
}

// scratch is per-call working space: nonces, additional data and masks must
// not live on the stack (slices passed to cipher interfaces escape), and a
// buffer per Conn would cost every idle session its size.
type scratch struct {
	nonce [12]byte
	mask  [16]byte
	mac   [64]byte
	aad   [23 + 255]byte // the longest additional data: RFC 9146 §5 with a 255-byte CID
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// Open authenticates and decrypts the records of one datagram from the peer,
// in place: the payloads alias datagram, whose bytes are undefined
// afterwards. It reports into d (reset first) and returns nil when at least
// one record authenticated, else the reason the (first) record was dropped.
// now is the caller's clock: it paces replies and expires late-handshake
// state.
//
// Nothing in the Conn changes (replay window, keys, epochs) unless a record
// authenticates: a forged, replayed, truncated or misaddressed record leaves
// the Conn as it was.
func (c *Conn) Open(d *Datagram, datagram []byte, now time.Time) error {
	d.reset()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed != 0 {
		return ErrClosed
	}
	if len(datagram) == 0 {
		return fmt.Errorf("%w: empty datagram", ErrMalformed)
	}
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	t := now.UnixNano()
	c.lastTime = max(c.lastTime, t)
	for len(datagram) > 0 && !d.Closed {
		var n int
		var err error
		if c.s.tls13 {
			n, err = c.openRecord13(d, datagram, t, sc)
		} else {
			n, err = c.openRecord12(d, datagram, t, sc)
		}
		if err != nil {
			d.drop(err)
		}
		if n <= 0 {
			break // no record boundary to continue from
		}
		datagram = datagram[n:]
	}
	if d.Authenticated {
		return nil
	}
	return d.DropErr
}

// Seal appends one protected application_data record carrying payload to
// dst and returns the extended slice; with enough capacity in dst it
// allocates nothing. A DTLS 1.3 session whose write key nears its usage
// limit starts a KeyUpdate: the KeyUpdate record is then appended before the
// application record, in the same datagram. Seal refuses (ErrLimit) rather
// than reuse a sequence number or exceed a key's limit.
func (c *Conn) Seal(dst, payload []byte) ([]byte, error) {
	if len(payload) > maxPlaintext {
		return dst, ErrTooLarge
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed != 0 {
		return dst, ErrClosed
	}
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	if !c.s.tls13 {
		return c.seal12(dst, ctApplicationData, payload, sc)
	}
	start := len(dst)
	var err error
	if c.ku == nil && c.write.seq >= c.s.updateAt() {
		// On error the KeyUpdate stays pending; Poll sends it again.
		if dst, err = c.startKeyUpdate(dst, sc); err != nil {
			return dst[:start], err
		}
	}
	if dst, err = c.seal13(dst, ctApplicationData, payload, sc); err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// CloseNotify appends a protected close_notify alert (RFC 5246 §7.2.1) to
// dst. Afterwards the Conn refuses Seal and Open.
func (c *Conn) CloseNotify(dst []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed&closedByUs != 0 {
		return dst, ErrClosed
	}
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	alert := []byte{alertWarning, alertCloseNotify}
	var err error
	if c.s.tls13 {
		dst, err = c.seal13(dst, ctAlert, alert, sc)
	} else {
		dst, err = c.seal12(dst, ctAlert, alert, sc)
	}
	if err == nil {
		c.closed |= closedByUs
	}
	return dst, err
}

// alert handles an authenticated alert record: close_notify or a fatal
// alert closes the session; other warnings are ignored. In DTLS 1.3 every
// alert but close_notify and user_canceled is fatal whatever its level
// (RFC 8446 §6).
func (c *Conn) alert(d *Datagram, body []byte) error {
	if len(body) != 2 {
		return fmt.Errorf("%w: alert of %d bytes", ErrMalformed, len(body))
	}
	fatal := body[0] == alertFatal
	if c.s.tls13 {
		fatal = body[1] != alertCloseNotify && body[1] != alertUserCanceled
	}
	if fatal || body[1] == alertCloseNotify {
		c.closed |= closedByPeer
		d.Closed, d.Alert = true, body[1]
	}
	return nil
}

// mayReply reports whether a handshake-layer reply may go out at t (at most
// one per replyInterval), and if so takes the slot.
func (c *Conn) mayReply(t int64) bool {
	if c.lastReply != 0 && t-c.lastReply < int64(replyInterval) && t >= c.lastReply {
		return false
	}
	c.lastReply = t
	return true
}

// innerPlaintext splits a DTLSInnerPlaintext (RFC 9146 §4, RFC 9147 §4):
// content, then the real content type, then zero padding.
func innerPlaintext(p []byte) (content []byte, typ byte, ok bool) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] != 0 {
			return p[:i], p[i], true
		}
	}
	return nil, 0, false
}
