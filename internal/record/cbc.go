package record

import (
	"crypto/rand"
	"crypto/subtle"
	"fmt"
)

// TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256 (RFC 5489): MAC-then-encrypt with a
// random explicit IV per record (RFC 5246 §6.2.3.2), HMAC-SHA256 over the
// additional data and the (inner) plaintext (RFC 9146 §5.1 for tls12_cid).
//
// The padding and the MAC are checked the way crypto/tls does it (conn.go,
// extractPadding and the macAndPaddingGood comparison): the padding is
// examined in constant time, a bad padding is replaced by a 1-byte one so
// that the MAC still covers every byte, the bytes after the data are fed to
// the HMAC after its digest is taken, and padding and MAC verdicts are
// combined with constant-time operations, so a bad padding and a bad MAC are
// indistinguishable by result.
//
// Residual timing caveat, the same as crypto/tls's: the HMAC digest covers a
// data length that depends on the secret padding length, and SHA-256 HMAC is
// not computed in constant time (crypto/tls: "SHA-256 variants of the CBC
// ciphersuites don't implement any Lucky13 countermeasures"), so a Lucky13
// timing channel remains (https://www.isg.rhul.ac.uk/tls/Lucky13.html).
// DTLS makes it easier to measure, since a bad record is dropped rather than
// ending the session. AEAD suites have no such channel; prefer them.

// sealCBC appends IV ‖ E(plaintext ‖ MAC ‖ padding) to dst, whose header
// (outer type, sequence number, CID) is already written.
func (c *Conn) sealCBC(dst []byte, outer, typ byte, seq uint64, payload []byte, sc *scratch) ([]byte, error) {
	ivStart := len(dst)
	dst = append(dst, make([]byte, 16)...)
	if _, err := rand.Read(dst[ivStart:]); err != nil {
		return dst, err
	}
	ptStart := len(dst)
	dst = append(dst, payload...)
	if outer == ctCID {
		dst = append(dst, typ)
	}
	m := c.write.mac
	m.Reset()
	m.Write(aad12(sc, outer, seq, c.cidOut, len(dst)-ptStart))
	m.Write(dst[ptStart:])
	dst = m.Sum(dst)
	pad := 16 - (len(dst)-ptStart)%16 // 1..16 bytes, each holding pad-1
	for range pad {
		dst = append(dst, byte(pad-1))
	}
	c.write.mode.SetIV(dst[ivStart:ptStart])
	c.write.mode.CryptBlocks(dst[ptStart:], dst[ptStart:])
	return dst, nil
}

// openCBC decrypts and authenticates IV ‖ ciphertext in place and returns
// the (inner) plaintext.
func (c *Conn) openCBC(typ byte, seq uint64, cid, body []byte, sc *scratch) ([]byte, error) {
	const macLen = 32
	// The smallest record holds one block of IV and MAC plus padding
	// rounded up to the block size. Lengths are public.
	if len(body)%16 != 0 || len(body) < 16+48 {
		return nil, fmt.Errorf("%w: CBC record body of %d bytes", ErrMalformed, len(body))
	}
	c.read.mode.SetIV(body[:16])
	p := body[16:]
	c.read.mode.CryptBlocks(p, p)
	padLen, padGood := cbcPadding(p)
	n := len(p) - macLen - padLen
	n = subtle.ConstantTimeSelect(int(uint32(n)>>31), 0, n) // n < 0 → 0
	m := c.read.mac
	m.Reset()
	m.Write(aad12(sc, typ, seq, cid, n))
	m.Write(p[:n])
	local := m.Sum(sc.mac[:0])
	m.Write(p[n+macLen:]) // crypto/tls's Lucky13 mitigation: hash the rest too
	if subtle.ConstantTimeCompare(local, p[n:n+macLen])&int(padGood) != 1 {
		return nil, fmt.Errorf("%w: sequence number %d", ErrAuth, seq)
	}
	return p[:n], nil
}

// cbcPadding returns, in constant time, how many bytes of padding (including
// the length byte) end p, and 1 if the padding is well formed, else 0 (RFC
// 5246 §6.2.3.2). A bad padding reports 1 byte, so that the MAC is computed
// over all the other bytes. It follows crypto/tls's extractPadding.
func cbcPadding(p []byte) (toRemove int, good byte) {
	padLen := p[len(p)-1]
	// good starts 0xff when padLen+1 <= len(p): the sign bit of t is clear.
	t := uint(len(p)-1) - uint(padLen)
	good = byte(int32(^t) >> 31)
	check := min(256, len(p)) // the longest padding; len(p) is public
	for i := range check {
		t := uint(padLen) - uint(i)
		mask := byte(int32(^t) >> 31) // 0xff when i <= padLen
		b := p[len(p)-1-i]
		good &^= mask&padLen ^ mask&b
	}
	// Fold: 0xff only if every bit of good is still set.
	good &= good << 4
	good &= good << 2
	good &= good << 1
	good = byte(int8(good) >> 7)
	padLen &= good
	return int(padLen) + 1, good & 1
}
