package record

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// DTLS 1.2 records (RFC 6347 §4.1) and RFC 9146 tls12_cid records, in epoch
// 1 only: the gateway never renegotiates.

// openRecord12 opens the record at the start of b. It returns the record's
// length (0 when no record boundary can be found) and why it was dropped.
func (c *Conn) openRecord12(d *Datagram, b []byte, t int64, sc *scratch) (int, error) {
	if len(b) < recordHeader12 {
		return 0, fmt.Errorf("%w: %d bytes, shorter than a record header", ErrMalformed, len(b))
	}
	typ := b[0]
	hdrLen := recordHeader12
	if typ == ctCID {
		if len(c.cidIn) == 0 {
			return 0, fmt.Errorf("%w: tls12_cid record, but no CID was issued", ErrCID)
		}
		hdrLen += len(c.cidIn)
		if len(b) < hdrLen {
			return 0, fmt.Errorf("%w: truncated tls12_cid header", ErrMalformed)
		}
	}
	length := int(binary.BigEndian.Uint16(b[hdrLen-2:]))
	n := hdrLen + length
	if n > len(b) {
		return 0, fmt.Errorf("%w: record of %d bytes in %d", ErrMalformed, n, len(b))
	}
	if b[1] != version12[0] || b[2] != version12[1] {
		return n, fmt.Errorf("%w: version %#02x%02x", ErrMalformed, b[1], b[2])
	}
	if epoch := binary.BigEndian.Uint16(b[3:5]); epoch != 1 {
		return n, fmt.Errorf("%w: epoch %d", ErrEpoch, epoch)
	}
	if length > maxCiphertext12 {
		return n, fmt.Errorf("%w: ciphertext of %d bytes", ErrMalformed, length)
	}
	var cid []byte
	if typ == ctCID {
		cid = b[11 : 11+len(c.cidIn)]
		if !bytes.Equal(cid, c.cidIn) {
			return n, fmt.Errorf("%w: unknown CID", ErrCID)
		}
	} else if len(c.cidIn) > 0 {
		return n, fmt.Errorf("%w: record without the issued CID", ErrCID)
	}
	seq := be48(b[5:11])
	if !c.read.win.check(seq) {
		return n, fmt.Errorf("%w: sequence number %d", ErrReplay, seq)
	}
	if err := c.read.ready(c.s, false); err != nil {
		return n, err
	}
	pt, err := c.unprotect12(b[:hdrLen], b[hdrLen:n], cid, seq, sc)
	if err != nil {
		c.read.fails++
		return n, err
	}
	newer := c.read.win.newer(seq)
	c.read.win.accept(seq)

	content := pt
	if typ == ctCID {
		var ok bool
		if content, typ, ok = innerPlaintext(pt); !ok {
			return n, fmt.Errorf("%w: inner plaintext without a content type", ErrMalformed)
		}
	}
	if len(content) > maxPlaintext {
		return n, fmt.Errorf("%w: plaintext of %d bytes", ErrMalformed, len(content))
	}
	switch typ {
	case ctApplicationData:
		d.Payloads = append(d.Payloads, content)
		// The client only sends application data once it has our Finished:
		// the final flight will not be asked for again.
		c.flight, c.flightUntil = nil, 0
	case ctAlert:
		if err := c.alert(d, content); err != nil {
			return n, err
		}
	case ctHandshake:
		c.lateHandshake12(d, content, t)
	default:
		return n, fmt.Errorf("%w: content type %d in epoch 1", ErrMalformed, typ)
	}
	d.Authenticated = true
	d.Newer = d.Newer || newer
	return n, nil
}

// lateHandshake12 answers an authenticated epoch-1 handshake record: the
// client's Finished again means it retransmitted its final flight because
// ours was lost, so ours is resent verbatim (RFC 6347 §4.2.4), at most once
// per replyInterval. Anything else (a renegotiation attempt) is ignored.
func (c *Conn) lateHandshake12(d *Datagram, msg []byte, t int64) {
	if len(msg) < handshakeHeader || msg[0] != hsFinished || c.flight == nil || t > c.flightUntil {
		return
	}
	if !c.mayReply(t) {
		return
	}
	for _, f := range c.flight {
		d.Replies = append(d.Replies, bytes.Clone(f))
	}
}

// aad12 writes the additional data of a record into sc.aad: RFC 5246
// §6.2.3.3 (seq_num ‖ type ‖ version ‖ length), or RFC 9146 §5 for
// tls12_cid (seq_num_placeholder ‖ tls12_cid ‖ cid_length ‖ tls12_cid ‖
// version ‖ epoch ‖ sequence_number ‖ cid ‖ length). length is that of the
// (inner) plaintext. The same bytes start the CBC MAC input.
func aad12(sc *scratch, typ byte, seq uint64, cid []byte, length int) []byte {
	a := sc.aad[:0]
	if typ == ctCID {
		a = append(a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, ctCID, byte(len(cid)), ctCID)
		a = append(a, version12[0], version12[1], 0, 1)
		a = append(a, byte(seq>>40), byte(seq>>32), byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq))
		a = append(a, cid...)
	} else {
		a = append(a, 0, 1, byte(seq>>40), byte(seq>>32), byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq))
		a = append(a, typ, version12[0], version12[1])
	}
	return append(a, byte(length>>8), byte(length))
}

// unprotect12 authenticates and decrypts one record body in place.
func (c *Conn) unprotect12(hdr, body, cid []byte, seq uint64, sc *scratch) ([]byte, error) {
	typ := hdr[0]
	if c.s.kind == kindCBC {
		return c.openCBC(typ, seq, cid, body, sc)
	}
	if len(body) < 8+c.s.tagLen {
		return nil, fmt.Errorf("%w: record body of %d bytes", ErrMalformed, len(body))
	}
	// nonce = salt (4, from the key block) ‖ nonce_explicit (8, in the record)
	copy(sc.nonce[:4], c.read.iv[:4])
	copy(sc.nonce[4:], body[:8])
	ct := body[8:]
	aad := aad12(sc, typ, seq, cid, len(ct)-c.s.tagLen)
	pt, err := c.read.aead.Open(ct[:0], sc.nonce[:], ct, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: sequence number %d", ErrAuth, seq)
	}
	return pt, nil
}

// seal12 appends one protected record of content type typ to dst.
func (c *Conn) seal12(dst []byte, typ byte, payload []byte, sc *scratch) ([]byte, error) {
	seq := c.write.seq
	if seq > maxSeq || seq >= c.s.sealLimit {
		return dst, ErrLimit
	}
	if err := c.write.ready(c.s, true); err != nil {
		return dst, err
	}
	outer := typ
	if len(c.cidOut) > 0 {
		outer = ctCID
	}
	start := len(dst)
	dst = append(dst, outer, version12[0], version12[1], 0, 1, byte(seq>>40), byte(seq>>32),
		byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq))
	if outer == ctCID {
		dst = append(dst, c.cidOut...)
	}
	dst = append(dst, 0, 0) // length, set below
	hdrEnd := len(dst)
	var err error
	if c.s.kind == kindCBC {
		dst, err = c.sealCBC(dst, outer, typ, seq, payload, sc)
		if err != nil {
			return dst[:start], err
		}
	} else {
		dst = append(dst, 0, 1, byte(seq>>40), byte(seq>>32), byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq))
		ptStart := len(dst)
		dst = append(dst, payload...)
		if outer == ctCID {
			dst = append(dst, typ) // DTLSInnerPlaintext without padding
		}
		copy(sc.nonce[:4], c.write.iv[:4])
		copy(sc.nonce[4:], dst[ptStart-8:ptStart])
		aad := aad12(sc, outer, seq, c.cidOut, len(dst)-ptStart)
		dst = c.write.aead.Seal(dst[:ptStart], sc.nonce[:], dst[ptStart:], aad)
	}
	binary.BigEndian.PutUint16(dst[hdrEnd-2:], uint16(len(dst)-hdrEnd))
	c.write.seq++
	return dst, nil
}
