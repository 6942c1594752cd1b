package importer

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// Errors of Import and ParseContext.
var (
	// ErrNoTargets: Import was given no target.
	ErrNoTargets = errors.New("importer: no import target")
	// ErrDuplicateTarget: the same (protocol, kdf) target appears twice.
	ErrDuplicateTarget = errors.New("importer: duplicate import target")
	// ErrNotDTLS: the target protocol is not DTLS 1.3, so the gateway, which
	// speaks only DTLS, could not honour the protocol binding of the key.
	ErrNotDTLS = errors.New("importer: target protocol is not dtls 1.3")
	// ErrVersion: the EPSK may not be used with DTLS 1.3, so no imported key
	// (which is DTLS 1.3 only) can inherit its policy.
	ErrVersion = errors.New("importer: epsk does not allow dtls 1.3")
	// ErrGroupContext: a group EPSK is imported without a context naming both
	// the client and the server (R4, R6), or naming another server.
	ErrGroupContext = errors.New("importer: group key needs a context naming client and server")
	// ErrContext: bytes are not a context made by Context.
	ErrContext = errors.New("importer: malformed peers context")
)

// Target is one (target_protocol, target_kdf) pair to import an EPSK for.
type Target struct {
	Protocol uint16 // ProtocolDTLS13 (ProtocolTLS13 is refused by Import)
	KDF      uint16 // HKDFSHA256 or HKDFSHA384
}

// DTLSTargets returns the targets the gateway's DTLS 1.3 suites need: SHA-256
// (AES-128-GCM, ChaCha20-Poly1305) and SHA-384 (AES-256-GCM). RFC 9258 §5.1:
// one imported key per target KDF offered. The slice is new on each call.
func DTLSTargets() []Target {
	return []Target{{ProtocolDTLS13, HKDFSHA256}, {ProtocolDTLS13, HKDFSHA384}}
}

// Context encodes the project's importer context, which names the two peers of
// the imported key (R4, R6; RFC 9258 Appendix B, Selfie):
//
//	struct { opaque client<1..2^16-1>; opaque server<1..2^16-1>; } PeersContext;
//
// client is the device's name (e.g. its LwM2M endpoint name), server the
// gateway's server name (the SNI the key is bound to). Context returns nil if
// either name is empty or the encoding would exceed 65535 bytes; Import then
// refuses a group key. The context travels in clear in the PSK identity: it
// must not hold secrets.
func Context(client, server string) []byte {
	if client == "" || server == "" || 4+len(client)+len(server) > 0xffff {
		return nil
	}
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(client)) })
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(server)) })
	return b.BytesOrPanic() // lengths checked above
}

// ParseContext decodes a context made by Context; both names are non-empty.
func ParseContext(context []byte) (client, server string, err error) {
	s := cryptobyte.String(context)
	var c, v cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&c) || !s.ReadUint16LengthPrefixed(&v) || !s.Empty() ||
		len(c) == 0 || len(v) == 0 {
		return "", "", ErrContext
	}
	return string(c), string(v), nil
}

// Import derives one imported key per target from the EPSK epsk (R6, RFC 9258
// §5.1). Each result has:
//
//   - Identity: the marshalled ImportedIdentity{epsk.Identity, context, target};
//   - Secret: ipskx (Derive with epsk.Hash, SHA-256 when zero);
//   - Hash: the target KDF's hash (SHA-256 or SHA-384);
//   - ImportContext: a copy of context, never nil, marking the key as imported;
//   - Versions: DTLS 1.3 only, and Legacy false (RFC 9258 §5.1: never (D)TLS 1.2);
//   - Endpoint, ServerName, Backend, Modes, AllowLowEntropy, Group: copied.
//     AllowLowEntropy must survive: ipskx looks random to the entropy screen
//     even when the EPSK was weak (R2).
//
// epsk must pass every MUST rule of pskstore.CheckKey except two: its identity
// may be up to 65535 bytes, and a Group EPSK needs no ImportContext, since
// importing it is the accommodation (R4). It must allow DTLS 1.3. If epsk.Group
// is set, context must be a Context naming client and server, and its server
// must equal epsk.ServerName when that is set (R4, R6). Targets must be
// non-empty, distinct and DTLS 1.3 (ErrNotDTLS otherwise).
//
// Results pass pskstore.CheckKey with a 65535-byte identity limit; the store
// applies its own configured limit (R7, 128 bytes by default) when it stores
// them, and a long context can exceed it. Import does not delete the EPSK;
// the store does (R6). Errors are wrapped sentinels or *pskstore.PolicyError.
func Import(epsk pskstore.Key, context []byte, targets []Target) ([]pskstore.Key, error) {
	if err := check(epsk, true); err != nil {
		return nil, fmt.Errorf("importer: epsk: %w", err)
	}
	if epsk.Versions != 0 && !epsk.Versions.Has(pskstore.DTLS13) {
		return nil, ErrVersion
	}
	if epsk.Group {
		_, server, err := ParseContext(context)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrGroupContext, err)
		}
		if epsk.ServerName != "" && server != epsk.ServerName {
			return nil, fmt.Errorf("%w: context names server %q, key is bound to %q", ErrGroupContext, server, epsk.ServerName)
		}
	}
	if len(targets) == 0 {
		return nil, ErrNoTargets
	}
	seen := make(map[Target]bool, len(targets))
	for _, t := range targets {
		if seen[t] {
			return nil, fmt.Errorf("%w: 0x%04x/0x%04x", ErrDuplicateTarget, t.Protocol, t.KDF)
		}
		seen[t] = true
		if _, err := labelPrefix(t.Protocol); err != nil {
			return nil, err
		}
		if t.Protocol != ProtocolDTLS13 {
			return nil, fmt.Errorf("%w: 0x%04x", ErrNotDTLS, t.Protocol)
		}
		if _, err := kdfHash(t.KDF); err != nil {
			return nil, err
		}
	}

	modes := epsk.Modes
	if modes == 0 {
		modes = pskstore.ModeDHE
	}
	out := make([]pskstore.Key, 0, len(targets))
	for _, t := range targets {
		id := ImportedIdentity{
			ExternalIdentity: epsk.Identity,
			Context:          context,
			TargetProtocol:   t.Protocol,
			TargetKDF:        t.KDF,
		}
		ident, err := id.Marshal()
		if err != nil {
			return nil, err
		}
		ipskx, err := Derive(epsk.Secret, epsk.Hash, id)
		if err != nil {
			return nil, err
		}
		hash, _ := kdfHash(t.KDF)
		k := pskstore.Key{
			Identity:        ident,
			Secret:          pskstore.Secret(ipskx),
			Hash:            hash,
			Endpoint:        epsk.Endpoint,
			ServerName:      epsk.ServerName,
			Backend:         epsk.Backend,
			Versions:        pskstore.DTLS13,
			Modes:           modes,
			Legacy:          false,
			AllowLowEntropy: epsk.AllowLowEntropy,
			Group:           epsk.Group,
			ImportContext:   append([]byte{}, context...),
		}
		if err := check(k, false); err != nil {
			return nil, fmt.Errorf("importer: imported key: %w", err)
		}
		out = append(out, k)
	}
	return out, nil
}

// check returns the first MUST finding of pskstore.CheckKey, with the wire
// limit on identities (the configured R7 limit is the store's). For an EPSK it
// ignores the missing ImportContext of a Group key, which Import supplies.
func check(k pskstore.Key, epsk bool) error {
	opts := pskstore.Options{MaxIdentityLen: pskstore.MaxWireIdentityLen}
	for _, e := range pskstore.CheckKey(k, opts).Must() {
		if epsk && e.Rule == "R4" && e.Field == "Group" {
			continue
		}
		return e
	}
	return nil
}
