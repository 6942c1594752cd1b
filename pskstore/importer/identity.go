package importer

import (
	"bytes"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// Target protocols (ImportedIdentity.target_protocol, RFC 9258 §5.1).
const (
	ProtocolTLS13  uint16 = 0x0304 // TLS 1.3 (RFC 8446)
	ProtocolDTLS13 uint16 = 0xfefc // DTLS 1.3 (RFC 9147)
)

// Target KDFs (ImportedIdentity.target_kdf, RFC 9258 §10, IANA "TLS KDF
// Identifiers").
const (
	HKDFSHA256 uint16 = 0x0001
	HKDFSHA384 uint16 = 0x0002
)

// MaxIdentityLen is the longest PSK identity on the wire (opaque
// identity<1..2^16-1>, RFC 8446 §4.2.11). RFC 9258 §5.1 says an importer
// SHOULD reject an ImportedIdentity longer than this; this package does.
const MaxIdentityLen = 1<<16 - 1

// Errors of Marshal and ParseImportedIdentity. They are wrapped with detail;
// compare with errors.Is.
var (
	// ErrExternalIdentity: external_identity is empty or longer than 65535 bytes.
	ErrExternalIdentity = errors.New("importer: external identity must be 1..65535 bytes")
	// ErrContextLength: context is longer than 65535 bytes.
	ErrContextLength = errors.New("importer: context longer than 65535 bytes")
	// ErrIdentityTooLong: the encoded ImportedIdentity does not fit a PSK identity.
	ErrIdentityTooLong = errors.New("importer: imported identity longer than 65535 bytes")
	// ErrTargetProtocol: target_protocol is neither TLS 1.3 nor DTLS 1.3.
	ErrTargetProtocol = errors.New("importer: unknown target protocol")
	// ErrTargetKDF: target_kdf is neither HKDF_SHA256 nor HKDF_SHA384.
	ErrTargetKDF = errors.New("importer: unknown target kdf")
	// ErrMalformed: the bytes end before the structure does.
	ErrMalformed = errors.New("importer: malformed imported identity")
	// ErrTrailingData: bytes follow a complete ImportedIdentity.
	ErrTrailingData = errors.New("importer: trailing data after imported identity")
)

// ImportedIdentity is RFC 9258 §5.1's structure; its encoding is the PSK
// identity of an imported key.
type ImportedIdentity struct {
	ExternalIdentity []byte // 1..65535 bytes
	Context          []byte // 0..65535 bytes; for this project see Context
	TargetProtocol   uint16 // ProtocolTLS13 or ProtocolDTLS13
	TargetKDF        uint16 // HKDFSHA256 or HKDFSHA384
}

// Marshal encodes id in the TLS presentation language:
//
//	opaque external_identity<1..2^16-1>; opaque context<0..2^16-1>;
//	uint16 target_protocol; uint16 target_kdf;
//
// It refuses out-of-range lengths, unknown protocols or KDFs, and an encoding
// longer than MaxIdentityLen.
func (id ImportedIdentity) Marshal() ([]byte, error) {
	if err := id.validate(); err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(id.ExternalIdentity) })
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(id.Context) })
	b.AddUint16(id.TargetProtocol)
	b.AddUint16(id.TargetKDF)
	out, err := b.Bytes()
	if err != nil { // unreachable after validate; kept so a bug cannot emit bad bytes
		return nil, fmt.Errorf("importer: encoding imported identity: %w", err)
	}
	return out, nil
}

func (id ImportedIdentity) validate() error {
	if n := len(id.ExternalIdentity); n < 1 || n > 0xffff {
		return fmt.Errorf("%w: got %d", ErrExternalIdentity, n)
	}
	if n := len(id.Context); n > 0xffff {
		return fmt.Errorf("%w: got %d", ErrContextLength, n)
	}
	if n := 2 + len(id.ExternalIdentity) + 2 + len(id.Context) + 4; n > MaxIdentityLen {
		return fmt.Errorf("%w: got %d", ErrIdentityTooLong, n)
	}
	if _, err := labelPrefix(id.TargetProtocol); err != nil {
		return err
	}
	if _, err := kdfHash(id.TargetKDF); err != nil {
		return err
	}
	return nil
}

// ParseImportedIdentity decodes b strictly: every length must match, no byte
// may follow, the protocol and KDF must be known, and the result must be one
// that Marshal accepts, so Marshal reproduces b exactly. The returned slices
// do not alias b.
func ParseImportedIdentity(b []byte) (ImportedIdentity, error) {
	if len(b) > MaxIdentityLen {
		return ImportedIdentity{}, fmt.Errorf("%w: got %d", ErrIdentityTooLong, len(b))
	}
	s := cryptobyte.String(b)
	var ext, ctx cryptobyte.String
	var id ImportedIdentity
	if !s.ReadUint16LengthPrefixed(&ext) || !s.ReadUint16LengthPrefixed(&ctx) ||
		!s.ReadUint16(&id.TargetProtocol) || !s.ReadUint16(&id.TargetKDF) {
		return ImportedIdentity{}, ErrMalformed
	}
	if !s.Empty() {
		return ImportedIdentity{}, fmt.Errorf("%w: %d bytes", ErrTrailingData, len(s))
	}
	id.ExternalIdentity = bytes.Clone([]byte(ext))
	id.Context = bytes.Clone([]byte(ctx))
	if err := id.validate(); err != nil {
		return ImportedIdentity{}, err
	}
	return id, nil
}
