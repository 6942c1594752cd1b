package record

import (
	"crypto/sha256"
	"crypto/sha512"
	"hash"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
)

// cipherKind is the record protection algorithm of a suite.
type cipherKind uint8

const (
	kindCCM      cipherKind = iota + 1 // AES-CCM, 1.2 (RFC 6655, RFC 7251)
	kindGCM                            // AES-GCM, 1.2 (RFC 5288) and 1.3
	kindCBC                            // AES-CBC + HMAC-SHA256, MAC-then-encrypt, 1.2 (RFC 5487)
	kindChaCha20                       // ChaCha20-Poly1305, 1.3 (RFC 8439)
)

// suite describes one supported cipher suite: what the record layer needs to
// derive keys and protect records. The table is the package's scope: DTLS 1.2
// PSK suites of the RFC 7925 profile plus AES-GCM and ECDHE-PSK CBC, and the
// three DTLS 1.3 suites pion implements.
type suite struct {
	id      ciphersuite.ID
	tls13   bool
	kind    cipherKind
	keyLen  int
	tagLen  int // AEAD tag, or the HMAC length for CBC
	hash    func() hash.Hash
	hashLen int // 1.3: traffic secret length; 1.2: PRF hash length

	// sealLimit is the number of records one write key may protect (RFC 9147
	// §4.5.3 for 1.3; RFC 9325 §4.4 for 1.2 AES-GCM; RFC 9147 Appendix B for
	// AES-CCM, which pion also reports for 1.2). Seal refuses beyond it; 1.3
	// starts a KeyUpdate at updateAt. It never exceeds the 48-bit sequence
	// number space.
	sealLimit uint64
	// failLimit is the integrity limit (records failing authentication per
	// read key) that Open enforces; 0: not enforced. See doc.go for why 1.2
	// CCM_8's 2^7 is counted but not enforced.
	failLimit uint64
}

// maxSeq is the largest record sequence number (48 bits, RFC 6347 §4.1 and
// RFC 9147 §4).
const maxSeq = 1<<48 - 1

// gcmLimit is RFC 9147 §4.5.3's confidentiality limit for AES-GCM, 2^24.5
// records, also RFC 9325 §4.4's advice for TLS 1.2.
const gcmLimit = 23726566

var suites = [...]suite{
	{id: ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, kind: kindCCM, keyLen: 16, tagLen: 8,
		hash: sha256.New, hashLen: 32, sealLimit: 1 << 23},
	{id: ciphersuite.TLS_PSK_WITH_AES_128_CCM, kind: kindCCM, keyLen: 16, tagLen: 16,
		hash: sha256.New, hashLen: 32, sealLimit: 1 << 23},
	{id: ciphersuite.TLS_PSK_WITH_AES_128_GCM_SHA256, kind: kindGCM, keyLen: 16, tagLen: 16,
		hash: sha256.New, hashLen: 32, sealLimit: gcmLimit},
	{id: ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256, kind: kindCBC, keyLen: 16, tagLen: 32,
		hash: sha256.New, hashLen: 32, sealLimit: maxSeq},
	{id: ciphersuite.TLS_AES_128_GCM_SHA256, tls13: true, kind: kindGCM, keyLen: 16, tagLen: 16,
		hash: sha256.New, hashLen: 32, sealLimit: gcmLimit, failLimit: 1 << 36},
	{id: ciphersuite.TLS_AES_256_GCM_SHA384, tls13: true, kind: kindGCM, keyLen: 32, tagLen: 16,
		hash: sha512.New384, hashLen: 48, sealLimit: gcmLimit, failLimit: 1 << 36},
	{id: ciphersuite.TLS_CHACHA20_POLY1305_SHA256, tls13: true, kind: kindChaCha20, keyLen: 32, tagLen: 16,
		hash: sha256.New, hashLen: 32, sealLimit: maxSeq, failLimit: 1 << 36},
}

// suiteByID returns the suite with the given ID for the given version, or nil.
func suiteByID(id uint16, tls13 bool) *suite {
	for i := range suites {
		if uint16(suites[i].id) == id && suites[i].tls13 == tls13 {
			return &suites[i]
		}
	}
	return nil
}

// updateAt is the write sequence number at which Seal starts a KeyUpdate on
// its own (1.3): three quarters of the limit, which leaves the peer a quarter
// of the budget (millions of records) to acknowledge it.
func (s *suite) updateAt() uint64 {
	return s.sealLimit - s.sealLimit/4
}

// explicitNonce is the length of the DTLS 1.2 per-record explicit part:
// the AEAD nonce_explicit (RFC 5288 §3, RFC 6655 §3) or the CBC IV (RFC 5246
// §6.2.3.2).
func (s *suite) explicitNonce() int {
	if s.kind == kindCBC {
		return 16
	}
	return 8
}
