package record

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"strings"
	"testing"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/keyschedule"
	"golang.org/x/crypto/chacha20"
	"golang.org/x/crypto/chacha20poly1305"
)

// peer13 is a test-side DTLS 1.3 record protector written separately from
// the package's (straight from RFC 9147 §4 with the standard library): it
// plays a client that sends header forms pion never writes (8-bit sequence
// numbers, no length field) and messages pion has no API for
// (NewConnectionID, RequestConnectionID), and reads our replies.
type peer13 struct {
	t      *testing.T
	hash   func() hash.Hash
	keyLen int
	chacha bool
	secret []byte
	epoch  uint64
	aead   cipher.AEAD
	iv, sn []byte
}

func newPeer13(t *testing.T, id ciphersuite.ID, secret []byte, epoch uint64) *peer13 {
	p := &peer13{t: t, hash: sha256.New, keyLen: 16, epoch: epoch}
	switch id {
	case ciphersuite.TLS_AES_256_GCM_SHA384:
		p.hash, p.keyLen = sha512.New384, 32
	case ciphersuite.TLS_CHACHA20_POLY1305_SHA256:
		p.keyLen, p.chacha = 32, true
	}
	p.setSecret(secret)
	return p
}

func (p *peer13) expand(label string, n int) []byte {
	b, err := keyschedule.HkdfExpandLabel(p.hash, p.secret, label, nil, n)
	if err != nil {
		p.t.Fatal(err)
	}
	return b
}

func (p *peer13) setSecret(secret []byte) {
	p.secret = secret
	key := p.expand("key", p.keyLen)
	p.iv, p.sn = p.expand("iv", 12), p.expand("sn", p.keyLen)
	var err error
	if p.chacha {
		p.aead, err = chacha20poly1305.New(key)
	} else {
		var b cipher.Block
		if b, err = aes.NewCipher(key); err == nil {
			p.aead, err = cipher.NewGCM(b)
		}
	}
	if err != nil {
		p.t.Fatal(err)
	}
}

// update moves to the next epoch (RFC 8446 §7.2).
func (p *peer13) update() {
	p.setSecret(p.expand("traffic upd", p.hash().Size()))
	p.epoch++
}

func (p *peer13) mask(sample []byte) []byte {
	out := make([]byte, 16)
	if p.chacha {
		c, err := chacha20.NewUnauthenticatedCipher(p.sn, sample[4:16])
		if err != nil {
			p.t.Fatal(err)
		}
		c.SetCounter(binary.LittleEndian.Uint32(sample[:4]))
		c.XORKeyStream(out, out)
		return out
	}
	b, err := aes.NewCipher(p.sn)
	if err != nil {
		p.t.Fatal(err)
	}
	b.Encrypt(out, sample[:16])
	return out
}

func (p *peer13) nonce(seq uint64) []byte {
	n := append([]byte(nil), p.iv...)
	for i := range 8 {
		n[4+i] ^= byte(seq >> (56 - 8*i))
	}
	return n
}

// record protects content as one record: 8- or 16-bit sequence number, with
// or without a length field, with cid if given.
func (p *peer13) record(typ byte, content []byte, seq uint64, seq16, length bool, cid []byte) []byte {
	first := byte(0x20) | byte(p.epoch&3)
	if len(cid) > 0 {
		first |= 0x10
	}
	if seq16 {
		first |= 0x08
	}
	if length {
		first |= 0x04
	}
	hdr := append([]byte{first}, cid...)
	seqAt := len(hdr)
	if seq16 {
		hdr = append(hdr, byte(seq>>8))
	}
	hdr = append(hdr, byte(seq))
	inner := append(append([]byte(nil), content...), typ)
	if length {
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(inner)+16))
	}
	ct := p.aead.Seal(nil, p.nonce(seq), inner, hdr)
	m := p.mask(ct)
	hdr[seqAt] ^= m[0]
	if seq16 {
		hdr[seqAt+1] ^= m[1]
	}
	return append(hdr, ct...)
}

// open reads one of our records (16-bit sequence number, length field) whose
// sequence number is near expect, and returns its type, content and number.
func (p *peer13) open(rec []byte, cidLen int, expect uint64) (byte, []byte, uint64) {
	p.t.Helper()
	if rec[0]&3 != byte(p.epoch&3) {
		p.t.Fatalf("record in epoch bits %d, reading epoch %d", rec[0]&3, p.epoch)
	}
	hdrLen := 1 + cidLen + 2 + 2
	hdr := append([]byte(nil), rec[:hdrLen]...)
	ct := rec[hdrLen:]
	m := p.mask(ct)
	hdr[1+cidLen] ^= m[0]
	hdr[2+cidLen] ^= m[1]
	seq := expect&^0xffff | uint64(binary.BigEndian.Uint16(hdr[1+cidLen:]))
	pt, err := p.aead.Open(nil, p.nonce(seq), ct, hdr)
	if err != nil {
		p.t.Fatalf("peer cannot open our record: %v", err)
	}
	i := len(pt) - 1
	for pt[i] == 0 {
		i--
	}
	return pt[i], pt[:i], seq
}

// keyLogLine returns a secret of the session's key log.
func keyLogLine(t *testing.T, log []byte, label string) []byte {
	for _, l := range strings.Split(string(log), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == label {
			b, err := hex.DecodeString(f[2])
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("no %s in the key log", label)
	return nil
}

// handshakeMsg builds a whole, unfragmented handshake message.
func handshakeMsg(typ byte, msgSeq uint16, body []byte) []byte {
	n := len(body)
	h := []byte{typ, byte(n >> 16), byte(n >> 8), byte(n), byte(msgSeq >> 8), byte(msgSeq), 0, 0, 0, byte(n >> 16), byte(n >> 8), byte(n)}
	return append(h, body...)
}

// parseACK returns the record numbers of an ACK body.
func parseACK(t *testing.T, b []byte) [][2]uint64 {
	t.Helper()
	if len(b) < 2 || int(binary.BigEndian.Uint16(b))+2 != len(b) {
		t.Fatalf("bad ACK %x", b)
	}
	var out [][2]uint64
	for r := b[2:]; len(r) >= 16; r = r[16:] {
		out = append(out, [2]uint64{binary.BigEndian.Uint64(r), binary.BigEndian.Uint64(r[8:])})
	}
	return out
}
