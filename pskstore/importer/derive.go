package importer

import (
	"crypto"
	"crypto/hkdf"
	_ "crypto/sha256" // registers crypto.SHA256
	_ "crypto/sha512" // registers crypto.SHA384
	"errors"
	"fmt"
)

// ErrHash: the EPSK's hash is neither SHA-256 nor SHA-384.
var ErrHash = errors.New("importer: epsk hash must be sha256 or sha384")

// ErrEmptyKey: the EPSK has no key material.
var ErrEmptyKey = errors.New("importer: empty epsk")

// Derive computes ipskx for id from the EPSK base key epsk (RFC 9258 §5.1):
//
//	epskx = HKDF-Extract(0, epsk)
//	ipskx = HKDF-Expand-Label(epskx, "derived psk", Hash(ImportedIdentity), L)
//
// epskHash is the EPSK's hash; it drives HKDF and Hash, and zero means SHA-256
// (the RFC's SHOULD when an EPSK has no hash). L is the output length of
// id.TargetKDF. The label prefix follows id.TargetProtocol (see labelPrefix).
// Derive does not apply R1 (minimum length); Import does.
func Derive(epsk []byte, epskHash crypto.Hash, id ImportedIdentity) (ipskx []byte, err error) {
	if len(epsk) == 0 {
		return nil, ErrEmptyKey
	}
	if epskHash == 0 {
		epskHash = crypto.SHA256
	}
	if epskHash != crypto.SHA256 && epskHash != crypto.SHA384 {
		return nil, fmt.Errorf("%w: got %v", ErrHash, epskHash)
	}
	ident, err := id.Marshal()
	if err != nil {
		return nil, err
	}
	target, _ := kdfHash(id.TargetKDF) // checked by Marshal
	prefix, _ := labelPrefix(id.TargetProtocol)

	epskx, err := extract(epskHash, epsk)
	if err != nil {
		return nil, err
	}
	defer clear(epskx)
	h := epskHash.New()
	h.Write(ident)
	return expandLabel(epskHash, epskx, prefix, "derived psk", h.Sum(nil), target.Size())
}

// extract is HKDF-Extract(0, secret), where "0" is RFC 8446's notation for a
// string of Hash.length zero bytes.
func extract(h crypto.Hash, secret []byte) ([]byte, error) {
	prk, err := hkdf.Extract(h.New, secret, make([]byte, h.Size()))
	if err != nil {
		return nil, fmt.Errorf("importer: hkdf-extract: %w", err)
	}
	return prk, nil
}

// expandLabel is HKDF-Expand-Label of RFC 8446 §7.1 with the label prefix of
// the target protocol:
//
//	struct { uint16 length; opaque label<7..255> = prefix + Label;
//	         opaque context<0..255>; } HkdfLabel;
func expandLabel(h crypto.Hash, secret []byte, prefix, label string, context []byte, length int) ([]byte, error) {
	full := prefix + label
	if len(full) < 7 || len(full) > 255 || len(context) > 255 || length < 0 || length > 0xffff {
		return nil, fmt.Errorf("importer: hkdf-expand-label: bad label, context or length")
	}
	info := make([]byte, 0, 2+1+len(full)+1+len(context))
	info = append(info, byte(length>>8), byte(length), byte(len(full)))
	info = append(info, full...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	out, err := hkdf.Expand(h.New, secret, string(info), length)
	if err != nil {
		return nil, fmt.Errorf("importer: hkdf-expand-label: %w", err)
	}
	return out, nil
}

// labelPrefix is the HKDF-Expand-Label prefix RFC 9258 §5.1 ties to
// target_protocol: "tls13 " (RFC 8446 §7.1) or "dtls13" (RFC 9147 §5.9).
func labelPrefix(protocol uint16) (string, error) {
	switch protocol {
	case ProtocolTLS13:
		return "tls13 ", nil
	case ProtocolDTLS13:
		return "dtls13", nil
	}
	return "", fmt.Errorf("%w: 0x%04x", ErrTargetProtocol, protocol)
}

// kdfHash maps a target KDF to its hash; L is the hash's size.
func kdfHash(kdf uint16) (crypto.Hash, error) {
	switch kdf {
	case HKDFSHA256:
		return crypto.SHA256, nil
	case HKDFSHA384:
		return crypto.SHA384, nil
	}
	return 0, fmt.Errorf("%w: 0x%04x", ErrTargetKDF, kdf)
}
