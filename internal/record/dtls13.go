package record

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// DTLS 1.3 records: the unified header (RFC 9147 §4), record-number
// encryption (§4.2.3) and sequence-number reconstruction (§4.2.2).

// openRecord13 opens the record at the start of b. It returns the record's
// length (0 when no record boundary can be found) and why it was dropped.
func (c *Conn) openRecord13(d *Datagram, b []byte, t int64, sc *scratch) (int, error) {
	first := b[0]
	if first&unifiedMask != unifiedFixed {
		// DTLSPlaintext (epoch 0: a retransmitted ClientHello, an alert):
		// skip it by its length.
		if len(b) < recordHeader12 {
			return 0, fmt.Errorf("%w: %d-byte plaintext record", ErrMalformed, len(b))
		}
		n := recordHeader12 + int(binary.BigEndian.Uint16(b[11:13]))
		if n > len(b) || (first != ctHandshake && first != ctAlert && first != ctACK) {
			return 0, fmt.Errorf("%w: content type %d", ErrMalformed, first)
		}
		return n, fmt.Errorf("%w: plaintext record", ErrEpoch)
	}
	hdrLen := 1
	if first&bitC != 0 {
		if len(c.cidIn) == 0 {
			return 0, fmt.Errorf("%w: record with a CID, but none was issued", ErrCID)
		}
		hdrLen += len(c.cidIn)
	}
	seqAt := hdrLen
	seqLen := 1
	if first&bitS != 0 {
		seqLen = 2
	}
	hdrLen += seqLen
	n := len(b) // without a length field the record fills the datagram
	if first&bitL != 0 {
		hdrLen += 2
		if len(b) < hdrLen {
			return 0, fmt.Errorf("%w: truncated unified header", ErrMalformed)
		}
		n = hdrLen + int(binary.BigEndian.Uint16(b[hdrLen-2:]))
		if n > len(b) {
			return 0, fmt.Errorf("%w: record of %d bytes in %d", ErrMalformed, n, len(b))
		}
	}
	if n < hdrLen+16 || n-hdrLen > maxCiphertext13 {
		// Record-number encryption samples 16 bytes of ciphertext.
		return n, fmt.Errorf("%w: ciphertext of %d bytes", ErrMalformed, n-hdrLen)
	}
	if first&bitC != 0 {
		if !bytes.Equal(b[1:1+len(c.cidIn)], c.cidIn) {
			return n, fmt.Errorf("%w: unknown CID", ErrCID)
		}
	} else if len(c.cidIn) > 0 {
		return n, fmt.Errorf("%w: record without the issued CID", ErrCID)
	}
	k := c.readKeys(first&3, t)
	if k == nil {
		return n, fmt.Errorf("%w: epoch bits %d", ErrEpoch, first&3)
	}
	if k.fails >= c.s.failLimit {
		return n, fmt.Errorf("%w: integrity limit of epoch %d", ErrLimit, k.epoch)
	}
	if err := k.ready(c.s, false); err != nil {
		return n, err
	}
	hdr, ct := b[:hdrLen], b[hdrLen:n]
	m0, m1 := k.mask(c.s, ct[:16], sc.mask[:])
	var partial uint64
	if seqLen == 2 {
		hdr[seqAt] ^= m0
		hdr[seqAt+1] ^= m1
		partial = uint64(hdr[seqAt])<<8 | uint64(hdr[seqAt+1])
	} else {
		hdr[seqAt] ^= m0
		partial = uint64(hdr[seqAt])
	}
	seq := reconstruct(k.win.next, partial, uint(8*seqLen))
	if seq > maxSeq || !k.win.check(seq) {
		return n, fmt.Errorf("%w: epoch %d sequence number %d", ErrReplay, k.epoch, seq)
	}
	nonce13(sc, &k.iv, seq)
	pt, err := k.aead.Open(ct[:0], sc.nonce[:], ct, hdr)
	if err != nil {
		k.fails++
		return n, fmt.Errorf("%w: epoch %d sequence number %d", ErrAuth, k.epoch, seq)
	}
	newer := k == &c.read && k.win.newer(seq)
	k.win.accept(seq)
	content, typ, ok := innerPlaintext(pt)
	if !ok || len(content) > maxPlaintext {
		return n, fmt.Errorf("%w: inner plaintext", ErrMalformed)
	}
	if k == c.hs && typ != ctHandshake && typ != ctAlert && typ != ctACK {
		return n, fmt.Errorf("%w: content type %d in the handshake epoch", ErrMalformed, typ)
	}
	switch typ {
	case ctApplicationData:
		d.Payloads = append(d.Payloads, content)
	case ctAlert:
		if err := c.alert(d, content); err != nil {
			return n, err
		}
	case ctHandshake:
		if err := c.handshake13(d, k, seq, content, t, sc); err != nil {
			return n, err
		}
	case ctACK:
		if err := c.ack13(d, content); err != nil {
			return n, err
		}
	default:
		return n, fmt.Errorf("%w: content type %d", ErrMalformed, typ)
	}
	d.Authenticated = true
	d.Newer = d.Newer || newer
	return n, nil
}

// readKeys selects the read keys for a record's two epoch bits: the current
// read epoch, the previous one while kept, or the handshake epoch while kept.
// The three can never share the low bits: the handshake keys go at the first
// KeyUpdate, so they coexist only with epochs 3 and 4.
func (c *Conn) readKeys(bits byte, t int64) *keys {
	switch {
	case byte(c.read.epoch&3) == bits:
		return &c.read
	case c.prev != nil && byte(c.prev.epoch&3) == bits && t <= c.prevUntil:
		return c.prev
	case c.hs != nil && bits == 2 && t <= c.hsUntil:
		return c.hsKeys()
	}
	return nil
}

// hsKeys returns the handshake read keys, derived from their secret on
// first use (init13 keeps only the secret); nil if that fails.
func (c *Conn) hsKeys() *keys {
	if c.hsLazy {
		var secret [48]byte
		n := copy(secret[:], c.hs.secret[:c.s.hashLen])
		if err := c.hs.derive13(c.s, secret[:n], 2); err != nil {
			return nil
		}
		c.hsLazy = false
	}
	return c.hs
}

// reconstruct returns the full sequence number whose low bits are partial
// and which is closest to next, the expected one (RFC 9147 §4.2.2).
func reconstruct(next, partial uint64, bits uint) uint64 {
	win := uint64(1) << bits
	cand := next&^(win-1) | partial
	switch {
	case cand > next && cand-next > win/2 && cand >= win:
		return cand - win
	case cand < next && next-cand >= win/2:
		return cand + win
	}
	return cand
}

// nonce13 writes the per-record nonce into sc.nonce: the 64-bit sequence
// number, left-padded, XORed with the IV (RFC 8446 §5.3).
func nonce13(sc *scratch, iv *[12]byte, seq uint64) {
	copy(sc.nonce[:], iv[:])
	for i := range 8 {
		sc.nonce[4+i] ^= byte(seq >> (56 - 8*i))
	}
}

// seal13 appends one protected record of content type typ to dst, in the
// current write epoch: a unified header with the peer's CID (if any), a
// 16-bit sequence number and a length (RFC 9147 §4), so that records can
// share a datagram.
func (c *Conn) seal13(dst []byte, typ byte, payload []byte, sc *scratch) ([]byte, error) {
	w := &c.write
	seq := w.seq
	if seq > maxSeq || seq >= c.s.sealLimit {
		return dst, ErrLimit
	}
	if err := w.ready(c.s, true); err != nil {
		return dst, err
	}
	start := len(dst)
	first := byte(unifiedFixed|bitS|bitL) | byte(w.epoch&3)
	if len(c.cidOut) > 0 {
		first |= bitC
	}
	dst = append(dst, first)
	dst = append(dst, c.cidOut...)
	seqAt := len(dst)
	dst = append(dst, byte(seq>>8), byte(seq))
	// The AEAD adds a 16-byte tag to the content and its type byte, so the
	// ciphertext always holds the 16-byte sample: no padding needed.
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(payload)+1+c.s.tagLen))
	hdrEnd := len(dst)
	dst = append(dst, payload...)
	dst = append(dst, typ)
	nonce13(sc, &w.iv, seq)
	dst = w.aead.Seal(dst[:hdrEnd], sc.nonce[:], dst[hdrEnd:], dst[start:hdrEnd])
	m0, m1 := w.mask(c.s, dst[hdrEnd:hdrEnd+16], sc.mask[:])
	dst[seqAt] ^= m0
	dst[seqAt+1] ^= m1
	w.seq++
	return dst, nil
}
