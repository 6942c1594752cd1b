package record

import (
	"crypto/cipher"
	"crypto/subtle"
	"errors"
)

// ccm is AES-CCM (RFC 3610) with the parameters of the DTLS 1.2 CCM suites
// (RFC 6655 §3, RFC 7251): a 12-byte nonce, so a 3-byte length field (L=3),
// and an 8- or 16-byte tag.
//
// Hand-written, not pion's pkg/crypto/ccm, because that one allocates on
// every record (the tag, a plaintext copy in Open and a cipher.NewCTR) and
// panics on bad input in Seal, while the record layer must seal and open with
// zero allocations. The standard library has no CCM. The differential test
// (ccm_test.go) checks this one against pion's on random inputs.
//
// A ccm is not safe for concurrent use: its scratch blocks live in the struct
// so that no call allocates (slices passed to a cipher.Block escape).
type ccm struct {
	b      cipher.Block
	tagLen int
	mac    [16]byte // CBC-MAC state
	ctr    [16]byte // counter block A_i
	ks     [16]byte // key stream block, or a padded partial block
}

const (
	ccmNonceLen = 12
	ccmL        = 15 - ccmNonceLen // RFC 3610 §2: L, the size of the length field
	ccmMaxLen   = 1<<(8*ccmL) - 1
)

var errCCMOpen = errors.New("record: ccm: message authentication failed")

func newCCM(b cipher.Block, tagLen int) *ccm {
	return &ccm{b: b, tagLen: tagLen}
}

func (c *ccm) NonceSize() int { return ccmNonceLen }
func (c *ccm) Overhead() int  { return c.tagLen }

// Seal encrypts and authenticates plaintext and appends the result to dst.
// plaintext and dst may alias exactly or not at all.
func (c *ccm) Seal(dst, nonce, plaintext, aad []byte) []byte {
	if len(nonce) != ccmNonceLen || len(plaintext) > ccmMaxLen {
		panic("record: ccm: bad nonce or message length")
	}
	ret, out := grow(dst, len(plaintext)+c.tagLen)
	c.cbcMAC(nonce, plaintext, aad)
	c.xorKeyStream(nonce, out[:len(plaintext)], plaintext)
	c.s0(nonce)
	subtle.XORBytes(out[len(plaintext):], c.mac[:c.tagLen], c.ks[:c.tagLen])
	return ret
}

// Open authenticates and decrypts ciphertext and appends the plaintext to
// dst. ciphertext and dst may alias exactly or not at all. On failure the
// output is zeroed, so no unauthenticated plaintext is left behind.
func (c *ccm) Open(dst, nonce, ciphertext, aad []byte) ([]byte, error) {
	if len(nonce) != ccmNonceLen || len(ciphertext) < c.tagLen || len(ciphertext)-c.tagLen > ccmMaxLen {
		return nil, errCCMOpen
	}
	n := len(ciphertext) - c.tagLen
	var tag [16]byte
	copy(tag[:], ciphertext[n:])
	ret, out := grow(dst, n)
	c.xorKeyStream(nonce, out, ciphertext[:n])
	c.cbcMAC(nonce, out, aad)
	c.s0(nonce)
	subtle.XORBytes(c.mac[:c.tagLen], c.mac[:c.tagLen], c.ks[:c.tagLen])
	if subtle.ConstantTimeCompare(c.mac[:c.tagLen], tag[:c.tagLen]) != 1 {
		clear(out)
		return nil, errCCMOpen
	}
	return ret, nil
}

// cbcMAC leaves the CBC-MAC T of RFC 3610 §2.2 in c.mac.
func (c *ccm) cbcMAC(nonce, msg, aad []byte) {
	b0 := &c.mac
	b0[0] = byte((c.tagLen-2)/2)<<3 | (ccmL - 1)
	if len(aad) > 0 {
		b0[0] |= 1 << 6
	}
	copy(b0[1:], nonce)
	b0[13], b0[14], b0[15] = byte(len(msg)>>16), byte(len(msg)>>8), byte(len(msg))
	c.b.Encrypt(c.mac[:], c.mac[:])
	if len(aad) > 0 {
		// RFC 3610 §2.2: a 2-byte length for 0 < l(a) < 2^16-2^8, which
		// covers every record header (at most a few hundred bytes).
		if len(aad) >= 0xff00 {
			panic("record: ccm: additional data too long")
		}
		clear(c.ks[:])
		c.ks[0], c.ks[1] = byte(len(aad)>>8), byte(len(aad))
		k := copy(c.ks[2:], aad)
		c.macBlock(c.ks[:])
		c.macBlocks(aad[k:])
	}
	c.macBlocks(msg)
}

// macBlocks feeds data to the CBC-MAC, zero-padding the last block.
func (c *ccm) macBlocks(data []byte) {
	for len(data) >= 16 {
		c.macBlock(data[:16])
		data = data[16:]
	}
	if len(data) > 0 {
		clear(c.ks[:])
		copy(c.ks[:], data)
		c.macBlock(c.ks[:])
	}
}

func (c *ccm) macBlock(block []byte) {
	subtle.XORBytes(c.mac[:], c.mac[:], block)
	c.b.Encrypt(c.mac[:], c.mac[:])
}

// xorKeyStream encrypts or decrypts src into dst with the counter blocks
// A_1, A_2, … (RFC 3610 §2.3).
func (c *ccm) xorKeyStream(nonce, dst, src []byte) {
	c.ctr[0] = ccmL - 1
	copy(c.ctr[1:], nonce)
	for i := uint32(1); len(src) > 0; i++ {
		c.ctr[13], c.ctr[14], c.ctr[15] = byte(i>>16), byte(i>>8), byte(i)
		c.b.Encrypt(c.ks[:], c.ctr[:])
		n := subtle.XORBytes(dst, src, c.ks[:])
		dst, src = dst[n:], src[n:]
	}
}

// s0 leaves S_0 = E(A_0), the tag's key stream block, in c.ks.
func (c *ccm) s0(nonce []byte) {
	c.ctr[0] = ccmL - 1
	copy(c.ctr[1:], nonce)
	c.ctr[13], c.ctr[14], c.ctr[15] = 0, 0, 0
	c.b.Encrypt(c.ks[:], c.ctr[:])
}

// grow extends dst by n bytes, reusing its capacity when it can, and returns
// the whole slice and the new tail (crypto/cipher's sliceForAppend).
func grow(dst []byte, n int) (whole, tail []byte) {
	if total := len(dst) + n; cap(dst) >= total {
		whole = dst[:total]
	} else {
		whole = make([]byte, total)
		copy(whole, dst)
	}
	return whole, whole[len(dst):]
}
