package record

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"

	"github.com/pion/dtls/v4/pkg/crypto/keyschedule"
	"github.com/pion/dtls/v4/pkg/crypto/prf"
	"golang.org/x/crypto/chacha20"
	"golang.org/x/crypto/chacha20poly1305"
)

// keys is the protection state of one direction in one epoch: the raw key
// material (always held, so a snapshot or a released Conn can rebuild
// everything) and, lazily, the instantiated ciphers.
//
// Raw bytes versus instantiated ciphers was decided by measurement (see the
// package doc): the ciphers are built on first use and dropped by
// Conn.Release, so an idle session holds only these arrays.
type keys struct {
	epoch  uint64
	secret [48]byte // 1.3: the traffic secret (suite.hashLen bytes); 1.2: unused
	key    [32]byte // suite.keyLen bytes
	iv     [12]byte // 1.3: the 12-byte IV; 1.2 AEAD: the 4-byte salt
	aux    [32]byte // 1.3: the record-number key (keyLen); 1.2 CBC: the HMAC key

	seq   uint64 // write: next sequence number in this epoch
	win   window // read: replay window
	fails uint64 // read: records that failed authentication under this key

	aead  cipher.AEAD  // nil until used, nil after release
	block cipher.Block // 1.3 AES: the record-number mask cipher; 1.2 CBC: AES
	mode  cbcMode      // 1.2 CBC
	mac   hash.Hash    // 1.2 CBC: HMAC-SHA256
}

// cbcMode is a CBC encrypter or decrypter whose IV can be reset per record,
// which crypto/cipher's implementations allow.
type cbcMode interface {
	cipher.BlockMode
	SetIV([]byte)
}

// release drops the instantiated ciphers; the next use rebuilds them.
func (k *keys) release() {
	k.aead, k.block, k.mode, k.mac = nil, nil, nil, nil
}

// ready instantiates the ciphers if needed. write selects the CBC direction.
func (k *keys) ready(s *suite, write bool) error {
	if k.aead != nil || k.mode != nil {
		return nil
	}
	switch s.kind {
	case kindChaCha20:
		a, err := chacha20poly1305.New(k.key[:32])
		if err != nil {
			return err
		}
		k.aead = a
		return nil
	}
	b, err := aes.NewCipher(k.key[:s.keyLen])
	if err != nil {
		return err
	}
	switch s.kind {
	case kindCCM:
		k.aead = newCCM(b, s.tagLen)
	case kindGCM:
		if k.aead, err = cipher.NewGCM(b); err != nil {
			return err
		}
		if s.tls13 {
			if k.block, err = aes.NewCipher(k.aux[:s.keyLen]); err != nil {
				return err
			}
		}
	case kindCBC:
		var m cipher.BlockMode
		zero := make([]byte, aes.BlockSize)
		if write {
			m = cipher.NewCBCEncrypter(b, zero)
		} else {
			m = cipher.NewCBCDecrypter(b, zero)
		}
		mode, ok := m.(cbcMode)
		if !ok {
			return fmt.Errorf("record: crypto/cipher CBC mode without SetIV")
		}
		k.block, k.mode, k.mac = b, mode, hmac.New(sha256.New, k.aux[:32])
	}
	return nil
}

// mask computes the RFC 9147 §4.2.3 record-number mask from the first 16
// bytes of a record's ciphertext and returns its first two bytes. out is
// scratch space of at least 16 bytes.
func (k *keys) mask(s *suite, sample, out []byte) (byte, byte) {
	if s.kind == kindChaCha20 {
		// Mask = ChaCha20(sn_key, counter = sample[0..3] little-endian,
		// nonce = sample[4..15]).
		c, err := chacha20.NewUnauthenticatedCipher(k.aux[:32], sample[4:16])
		if err != nil {
			panic(err) // fixed lengths: cannot happen
		}
		c.SetCounter(binary.LittleEndian.Uint32(sample[:4]))
		out[0], out[1] = 0, 0
		c.XORKeyStream(out[:2], out[:2])
		return out[0], out[1]
	}
	// Mask = AES-ECB(sn_key, sample).
	k.block.Encrypt(out[:16], sample[:16])
	return out[0], out[1]
}

// derive13 fills the raw key material of a DTLS 1.3 epoch from its traffic
// secret (RFC 8446 §7.3 with RFC 9147 §5.9's "dtls13" label prefix and
// §4.2.3's "sn" key).
func (k *keys) derive13(s *suite, secret []byte, epoch uint64) error {
	if len(secret) != s.hashLen {
		return fmt.Errorf("%w: traffic secret of %d bytes, want %d", ErrParams, len(secret), s.hashLen)
	}
	key, err := keyschedule.HkdfExpandLabel(s.hash, secret, "key", nil, s.keyLen)
	if err != nil {
		return err
	}
	iv, err := keyschedule.HkdfExpandLabel(s.hash, secret, "iv", nil, 12)
	if err != nil {
		return err
	}
	sn, err := keyschedule.HkdfExpandLabel(s.hash, secret, "sn", nil, s.keyLen)
	if err != nil {
		return err
	}
	*k = keys{epoch: epoch}
	copy(k.secret[:], secret)
	copy(k.key[:], key)
	copy(k.iv[:], iv)
	copy(k.aux[:], sn)
	return nil
}

// next13 returns the keys of the following epoch: the traffic secret is
// advanced with "traffic upd" (RFC 8446 §7.2), sequence numbers restart at 0.
func (k *keys) next13(s *suite) (keys, error) {
	secret, err := keyschedule.HkdfExpandLabel(s.hash, k.secret[:s.hashLen], "traffic upd", nil, s.hashLen)
	if err != nil {
		return keys{}, err
	}
	var n keys
	err = n.derive13(s, secret, k.epoch+1)
	return n, err
}

// keys12 expands a DTLS 1.2 master secret into the server's write and read
// keys of epoch 1 (RFC 5246 §6.3, pion's prf package).
func keys12(s *suite, master, clientRandom, serverRandom []byte) (write, read keys, err error) {
	macLen, ivLen := 0, 4
	if s.kind == kindCBC {
		macLen, ivLen = 32, 16 // the CBC "IV" of the key block is unused with explicit IVs
	}
	kb, err := prf.GenerateEncryptionKeys(master, clientRandom, serverRandom, macLen, s.keyLen, ivLen, s.hash)
	if err != nil {
		return keys{}, keys{}, fmt.Errorf("%w: key expansion: %v", ErrParams, err)
	}
	write, read = keys{epoch: 1}, keys{epoch: 1}
	copy(write.key[:], kb.ServerWriteKey)
	copy(read.key[:], kb.ClientWriteKey)
	if s.kind == kindCBC {
		copy(write.aux[:], kb.ServerMACKey)
		copy(read.aux[:], kb.ClientMACKey)
	} else {
		copy(write.iv[:], kb.ServerWriteIV)
		copy(read.iv[:], kb.ClientWriteIV)
	}
	return write, read, nil
}
