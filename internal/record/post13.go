package record

import (
	"encoding/binary"
	"fmt"
	"time"
)

// DTLS 1.3 post-handshake messages, answered here so that no goroutine per
// session is needed: ACKs (RFC 9147 §7), KeyUpdate (§8), late client
// Finished, NewConnectionID and RequestConnectionID (§9).
//
// Handshake messages are processed in message_seq order and whole: a message
// with message_seq below the next expected one is a retransmission and is
// only acknowledged; one above it, or a fragment, is dropped unacknowledged
// so that the peer retransmits it (post-handshake messages are a few bytes,
// never fragmented by pion). A record is acknowledged only when every
// message in it was processed.

// handshake13 handles the handshake messages of an authenticated record of
// epoch k.epoch, sequence number seq.
func (c *Conn) handshake13(d *Datagram, k *keys, seq uint64, b []byte, t int64, sc *scratch) error {
	epoch := k.epoch // k may be replaced by a KeyUpdate below
	if k == c.hs {
		// The client retransmitted its Finished: our ACK of it was lost.
		// Acknowledge this record in the application epoch, paced.
		if len(b) < handshakeHeader || b[0] != hsFinished {
			return fmt.Errorf("%w: handshake type %d in the handshake epoch", ErrMalformed, b[0])
		}
		if c.mayReply(t) {
			return c.replyACK(d, epoch, seq, sc)
		}
		return nil
	}
	for len(b) > 0 {
		if len(b) < handshakeHeader {
			return fmt.Errorf("%w: truncated handshake header", ErrMalformed)
		}
		typ := b[0]
		length := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		msgSeq := binary.BigEndian.Uint16(b[4:6])
		offset := int(b[6])<<16 | int(b[7])<<8 | int(b[8])
		fragLen := int(b[9])<<16 | int(b[10])<<8 | int(b[11])
		if handshakeHeader+fragLen > len(b) {
			return fmt.Errorf("%w: truncated handshake fragment", ErrMalformed)
		}
		body := b[handshakeHeader : handshakeHeader+fragLen]
		b = b[handshakeHeader+fragLen:]
		switch {
		case msgSeq < c.recvSeq:
			continue // a retransmission: acknowledge only
		case msgSeq > c.recvSeq || offset != 0 || fragLen != length:
			return nil // future or fragmented: no ACK, the peer retransmits
		}
		switch typ {
		case hsKeyUpdate:
			if err := c.peerKeyUpdate(d, k, body, t, sc); err != nil {
				return err
			}
		case hsNewConnectionID, hsRequestConnectionID:
			// Acknowledged and ignored: the gateway routes by the one CID
			// it issued and keeps using the peer's CID from the handshake.
		default:
			return fmt.Errorf("%w: post-handshake message type %d", ErrMalformed, typ)
		}
		c.recvSeq++
	}
	return c.replyACK(d, epoch, seq, sc)
}

// peerKeyUpdate installs the next read epoch (RFC 9147 §8). The previous one
// is kept for prevKeep for reordered records; the handshake keys go. If the
// peer asked for it, our own KeyUpdate goes out with the ACK.
func (c *Conn) peerKeyUpdate(d *Datagram, k *keys, body []byte, t int64, sc *scratch) error {
	if len(body) != 1 || body[0] > 1 {
		return fmt.Errorf("%w: KeyUpdate body", ErrMalformed)
	}
	if k != &c.read {
		return fmt.Errorf("%w: KeyUpdate in epoch %d, reading %d", ErrEpoch, k.epoch, c.read.epoch)
	}
	next, err := c.read.next13(c.s)
	if err != nil {
		return err
	}
	prev := c.read
	c.prev = &prev
	c.prevUntil = t + int64(prevKeep)
	c.read = next
	c.hs = nil
	if body[0] == 1 && c.ku == nil {
		// update_requested. An outstanding KeyUpdate of ours already
		// updates our keys, so it answers the request too.
		out, err := c.startKeyUpdate(nil, sc)
		if err != nil {
			return err
		}
		d.Replies = append(d.Replies, out)
	}
	return nil
}

// replyACK appends to d.Replies a datagram with an ACK record (RFC 9147 §7)
// acknowledging record (epoch, seq), sealed in the current write epoch.
func (c *Conn) replyACK(d *Datagram, epoch, seq uint64, sc *scratch) error {
	var body [2 + 16]byte
	body[1] = 16
	binary.BigEndian.PutUint64(body[2:], epoch)
	binary.BigEndian.PutUint64(body[10:], seq)
	out, err := c.seal13(make([]byte, 0, 64+len(c.cidOut)), ctACK, body[:], sc)
	if err != nil {
		return err
	}
	d.Replies = append(d.Replies, out)
	return nil
}

// ack13 handles the peer's ACK: if it acknowledges a record that carried our
// KeyUpdate, the write keys move to the next epoch (RFC 9147 §8: not before).
func (c *Conn) ack13(d *Datagram, b []byte) error {
	if len(b) < 2 || int(binary.BigEndian.Uint16(b))+2 != len(b) || (len(b)-2)%16 != 0 {
		return fmt.Errorf("%w: ACK of %d bytes", ErrMalformed, len(b))
	}
	if c.ku == nil {
		return nil
	}
	for r := b[2:]; len(r) > 0; r = r[16:] {
		epoch, seq := binary.BigEndian.Uint64(r), binary.BigEndian.Uint64(r[8:])
		if epoch != c.write.epoch || !c.ku.carried(seq) {
			continue
		}
		next, err := c.write.next13(c.s)
		if err != nil {
			return err
		}
		c.write, c.ku = next, nil
		d.KeysChanged = true
		return nil
	}
	return nil
}

func (u *keyUpdate) carried(seq uint64) bool {
	for i := range min(int(u.nsent), len(u.sent)) {
		if u.sent[i] == seq {
			return true
		}
	}
	return false
}

// startKeyUpdate begins our KeyUpdate: it appends the KeyUpdate record to
// dst and remembers it for its ACK and retransmissions (Poll).
func (c *Conn) startKeyUpdate(dst []byte, sc *scratch) ([]byte, error) {
	c.ku = &keyUpdate{msgSeq: c.sendSeq, interval: int64(retransmitFirst)}
	if c.lastTime != 0 {
		c.ku.next = c.lastTime + c.ku.interval
	}
	c.sendSeq++
	return c.sendKeyUpdate(dst, sc)
}

// sendKeyUpdate appends one transmission of the pending KeyUpdate
// (update_not_requested) to dst.
func (c *Conn) sendKeyUpdate(dst []byte, sc *scratch) ([]byte, error) {
	u := c.ku
	msg := [handshakeHeader + 1]byte{hsKeyUpdate, 0, 0, 1, byte(u.msgSeq >> 8), byte(u.msgSeq), 0, 0, 0, 0, 0, 1, 0}
	seq := c.write.seq
	out, err := c.seal13(dst, ctHandshake, msg[:], sc)
	if err != nil {
		return dst, err
	}
	u.sent[u.nsent%4] = seq
	u.nsent++
	if u.nsent >= 8 {
		u.nsent -= 4 // bounded, same position in the ring
	}
	return out, nil
}

// UpdateKeys starts a KeyUpdate of our write keys (DTLS 1.3, RFC 9147 §8)
// and returns the datagram to send; the keys change once the peer
// acknowledges it (Open reports KeysChanged), and Poll retransmits it until
// then. Seal does this by itself before a key's usage limit (three quarters
// of it); the gateway may rotate earlier. It returns nil, nil if one is
// already pending, and an error for a DTLS 1.2 session.
func (c *Conn) UpdateKeys() ([]byte, error) {
	if !c.s.tls13 {
		return nil, fmt.Errorf("record: KeyUpdate needs DTLS 1.3")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed != 0 {
		return nil, ErrClosed
	}
	if c.ku != nil {
		return nil, nil
	}
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	return c.startKeyUpdate(nil, sc)
}

// Poll runs the session's timers at caller time now: it returns the
// retransmissions due (our unacknowledged KeyUpdate) and drops late-handshake
// state whose time is over. The gateway calls it at NextPoll, or whenever
// convenient; it never blocks.
func (c *Conn) Poll(now time.Time) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := now.UnixNano()
	c.lastTime = max(c.lastTime, t)
	if c.hs != nil && t > c.hsUntil {
		c.hs = nil
	}
	if c.prev != nil && t > c.prevUntil {
		c.prev = nil
	}
	if c.flight != nil && t > c.flightUntil {
		c.flight = nil
	}
	u := c.ku
	if u == nil || c.closed != 0 {
		return nil
	}
	if u.next == 0 {
		u.next = t + u.interval // started by Seal, which has no clock
		return nil
	}
	if t < u.next {
		return nil
	}
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	out, err := c.sendKeyUpdate(nil, sc)
	if err != nil {
		return nil
	}
	u.interval = min(2*u.interval, int64(retransmitMax))
	u.next = t + u.interval
	return [][]byte{out}
}

// NextPoll returns when Poll next has work — a retransmission due, or
// late-handshake state to drop — or the zero time when nothing is pending:
// a caller that polls many sessions skips a session until then.
func (c *Conn) NextPoll() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next int64
	due := func(t int64) {
		if next == 0 || t < next {
			next = t
		}
	}
	if c.hs != nil {
		due(c.hsUntil + 1) // Poll drops it once past hsUntil
	}
	if c.prev != nil {
		due(c.prevUntil + 1)
	}
	if c.flight != nil {
		due(c.flightUntil + 1)
	}
	if c.ku != nil && c.closed == 0 {
		if c.ku.next == 0 {
			return time.Unix(0, 1) // no clock seen yet: poll now to start the timer
		}
		due(c.ku.next)
	}
	if next == 0 {
		return time.Time{}
	}
	return time.Unix(0, next)
}
