package record

import (
	"encoding/binary"
	"fmt"
)

// Snapshot format, version 1. Everything a session needs to continue after a
// restart, in plaintext: the gateway seals it. Integers are big-endian;
// "uvarint" is encoding/binary's. Secrets are raw; 1.3 keys are re-derived
// from the traffic secrets and 1.2 keys from the master secret on restore.
//
//	byte     format version (1)
//	byte     flags: 1 DTLS 1.3, 2 closed by peer, 4 closed by us,
//	         8 KeyUpdate pending, 16 previous read epoch, 32 handshake
//	         read keys, 64 final flight
//	uint16   cipher suite
//	byte+N   issued CID (length, bytes); byte+N peer CID
//	byte+N   handoff material (1.2: master secret ‖ client random ‖
//	         server random; 1.3: exporter master secret)
//	DTLS 1.2:
//	  uvarint  next write sequence number
//	  window   read window: uvarint next, uint64 seen bitmap
//	  [flag 64] int64 until (unix ns), byte count, count × (uint16 length, bytes)
//	DTLS 1.3:
//	  write    uvarint epoch, secret (hash length), uvarint next sequence number
//	  read     uvarint epoch, secret, window
//	  [flag 16] previous read: secret, window, int64 until (epoch = read-1)
//	  [flag 32] handshake read: secret, window, int64 until (epoch 2)
//	  uint16   next message_seq to send; uint16 next expected
//	  [flag 8] KeyUpdate: uint16 message_seq, byte transmissions, 4 × uvarint
//	           sequence numbers
//
// Not kept: pacing (the last reply time), authentication-failure counters
// (statistics, so that a rejected record leaves the snapshot as it was) and
// instantiated ciphers.
const snapshotVersion = 1

const (
	snap13 = 1 << iota
	snapClosedByPeer
	snapClosedByUs
	snapKeyUpdate
	snapPrev
	snapHS
	snapFlight
)

// MarshalBinary encodes the session's state (format above). A 1.3 session
// with CIDs on AES-128-GCM takes 130 bytes, 179 during the first
// two minutes (handshake read keys); see the package doc for measured sizes.
func (c *Conn) MarshalBinary() ([]byte, error) {
	return c.AppendBinary(make([]byte, 0, 192))
}

// AppendBinary appends the MarshalBinary encoding to b.
func (c *Conn) AppendBinary(b []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	flags := byte(0)
	if c.s.tls13 {
		flags |= snap13
	}
	if c.closed&closedByPeer != 0 {
		flags |= snapClosedByPeer
	}
	if c.closed&closedByUs != 0 {
		flags |= snapClosedByUs
	}
	if c.ku != nil {
		flags |= snapKeyUpdate
	}
	if c.prev != nil {
		flags |= snapPrev
	}
	if c.hs != nil {
		flags |= snapHS
	}
	if c.flight != nil {
		flags |= snapFlight
	}
	b = append(b, snapshotVersion, flags)
	b = binary.BigEndian.AppendUint16(b, uint16(c.s.id))
	b = appendShort(b, c.cidIn)
	b = appendShort(b, c.cidOut)
	b = appendShort(b, c.handoff)
	if !c.s.tls13 {
		b = binary.AppendUvarint(b, c.write.seq)
		b = appendWindow(b, &c.read)
		if c.flight != nil {
			b = binary.BigEndian.AppendUint64(b, uint64(c.flightUntil))
			b = append(b, byte(len(c.flight)))
			for _, f := range c.flight {
				b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
				b = append(b, f...)
			}
		}
		return b, nil
	}
	h := c.s.hashLen
	b = binary.AppendUvarint(b, c.write.epoch)
	b = append(b, c.write.secret[:h]...)
	b = binary.AppendUvarint(b, c.write.seq)
	b = binary.AppendUvarint(b, c.read.epoch)
	b = append(b, c.read.secret[:h]...)
	b = appendWindow(b, &c.read)
	if c.prev != nil {
		b = append(b, c.prev.secret[:h]...)
		b = appendWindow(b, c.prev)
		b = binary.BigEndian.AppendUint64(b, uint64(c.prevUntil))
	}
	if c.hs != nil {
		b = append(b, c.hs.secret[:h]...)
		b = appendWindow(b, c.hs)
		b = binary.BigEndian.AppendUint64(b, uint64(c.hsUntil))
	}
	b = binary.BigEndian.AppendUint16(b, c.sendSeq)
	b = binary.BigEndian.AppendUint16(b, c.recvSeq)
	if u := c.ku; u != nil {
		b = binary.BigEndian.AppendUint16(b, u.msgSeq)
		b = append(b, u.nsent)
		for _, s := range u.sent {
			b = binary.AppendUvarint(b, s)
		}
	}
	return b, nil
}

func appendShort(b, v []byte) []byte {
	return append(append(b, byte(len(v))), v...)
}

func appendWindow(b []byte, k *keys) []byte {
	b = binary.AppendUvarint(b, k.win.next)
	return binary.BigEndian.AppendUint64(b, k.win.seen)
}

// UnmarshalBinary restores a session from MarshalBinary's encoding into c,
// which must be a new, zero Conn. Bad input is rejected with an error
// wrapping ErrSnapshot and leaves c unusable. After a restore the gateway
// calls ReserveWriteSeq with the end of its last persisted reservation.
func (c *Conn) UnmarshalBinary(data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.s != nil {
		return fmt.Errorf("%w: UnmarshalBinary into a Conn in use", ErrSnapshot)
	}
	r := reader{b: data}
	if v := r.byte(); v != snapshotVersion {
		return fmt.Errorf("%w: format version %d", ErrSnapshot, v)
	}
	flags := r.byte()
	tls13 := flags&snap13 != 0
	id := r.uint16()
	if c.s = suiteByID(id, tls13); c.s == nil {
		return fmt.Errorf("%w: cipher suite %#04x", ErrSnapshot, id)
	}
	c.cidIn, c.cidOut, c.handoff = r.short(), r.short(), r.short()
	if flags&snapClosedByPeer != 0 {
		c.closed |= closedByPeer
	}
	if flags&snapClosedByUs != 0 {
		c.closed |= closedByUs
	}
	var err error
	if tls13 {
		err = c.unmarshal13(&r, flags)
	} else {
		err = c.unmarshal12(&r, flags)
	}
	if err == nil && r.err == nil && len(r.b) != 0 {
		err = fmt.Errorf("%w: %d trailing bytes", ErrSnapshot, len(r.b))
	}
	if r.err != nil {
		return r.err
	}
	return err
}

func (c *Conn) unmarshal12(r *reader, flags byte) error {
	if flags&(snapKeyUpdate|snapPrev|snapHS) != 0 {
		return fmt.Errorf("%w: DTLS 1.3 state in a 1.2 snapshot", ErrSnapshot)
	}
	if len(c.handoff) != 48+64 {
		return fmt.Errorf("%w: 1.2 key material of %d bytes", ErrSnapshot, len(c.handoff))
	}
	if err := c.derive12(); err != nil {
		return fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	c.write.seq = r.seq(maxSeq + 1)
	r.window(&c.read)
	if flags&snapFlight != 0 {
		c.flightUntil = r.int64()
		n := int(r.byte())
		for range n {
			f := r.bytes(int(r.uint16()))
			if r.err != nil {
				break
			}
			c.flight = append(c.flight, f)
		}
		if n == 0 {
			return fmt.Errorf("%w: empty final flight", ErrSnapshot)
		}
	}
	return nil
}

func (c *Conn) unmarshal13(r *reader, flags byte) error {
	if flags&snapFlight != 0 {
		return fmt.Errorf("%w: DTLS 1.2 state in a 1.3 snapshot", ErrSnapshot)
	}
	h := c.s.hashLen
	if len(c.handoff) != h {
		return fmt.Errorf("%w: exporter secret of %d bytes", ErrSnapshot, len(c.handoff))
	}
	derive := func(k *keys, epoch uint64) {
		secret := r.bytes(h)
		if r.err == nil {
			if err := k.derive13(c.s, secret, epoch); err != nil {
				r.fail(err)
			}
		}
	}
	we := r.epoch()
	derive(&c.write, we)
	c.write.seq = r.seq(maxSeq + 1)
	re := r.epoch()
	derive(&c.read, re)
	r.window(&c.read)
	if flags&snapPrev != 0 {
		c.prev = new(keys)
		derive(c.prev, re-1)
		r.window(c.prev)
		c.prevUntil = r.int64()
	}
	if flags&snapHS != 0 {
		c.hs = new(keys)
		derive(c.hs, 2)
		r.window(c.hs)
		c.hsUntil = r.int64()
	}
	c.sendSeq, c.recvSeq = r.uint16(), r.uint16()
	if flags&snapKeyUpdate != 0 {
		c.ku = &keyUpdate{msgSeq: r.uint16(), nsent: r.byte(), interval: int64(retransmitFirst)}
		if c.ku.nsent >= 8 {
			return fmt.Errorf("%w: KeyUpdate transmissions %d", ErrSnapshot, c.ku.nsent)
		}
		for i := range c.ku.sent {
			c.ku.sent[i] = r.seq(maxSeq)
		}
	}
	if c.prev != nil && re <= 3 {
		return fmt.Errorf("%w: previous read epoch below 3", ErrSnapshot)
	}
	return nil
}
