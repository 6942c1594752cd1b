package gateway

import (
	"encoding/binary"
	"slices"

	"golang.org/x/crypto/cryptobyte"
)

// What the demultiplexer learns from a ClientHello before pion sees it.
//
// pion parses ClientHellos itself, but only once a per-peer Conn exists, and
// it refuses one without an extensions block with decode_error. The gateway
// reads the few fields it needs first — offered suites, server_name,
// psk_key_exchange_modes, supported_groups, key_share, the cookie — so that
// it can refuse what it can never serve with a clear alert and no per-peer
// state (issue: refuse early), choose the DTLS 1.2 suite list that puts
// ECDHE-PSK first (R3), and apply the R3/R5 policy before the ServerHello.
// golang.org/x/crypto/cryptobyte does the length-prefixed reading; the
// field layout is RFC 6347 §4.2.2 / RFC 9147 §5.3 (RFC 8446 §4.1.2).

// Extension code points (RFC 8446 §4.2, RFC 6066 §3).
const (
	extServerName          = 0
	extSupportedGroups     = 10
	extPreSharedKey        = 41
	extCookie              = 44
	extSupportedVersions   = 43
	extPSKKeyExchangeModes = 45
	extKeyShare            = 51
)

// PSK key-exchange modes offered in psk_key_exchange_modes (RFC 8446 §4.2.9).
const (
	offersPSKKE  uint8 = 1 << 0 // psk_ke (0)
	offersPSKDHE uint8 = 1 << 1 // psk_dhe_ke (1)
)

// helloVerdict is what the demultiplexer does with a first datagram.
type helloVerdict uint8

const (
	helloOK            helloVerdict = iota
	helloFragmented                 // first fragment only: pion reassembles and decides
	helloMalformed                  // not a well-formed ClientHello: dropped silently
	helloNoExtensions               // RFC 5246 §7.4.1.2 allows it; pion cannot serve it
	helloNoCommonSuite              // offers none of the suites this gateway serves
)

// hello holds the fields of a ClientHello the gateway decides on. Slices
// are copies: a hello outlives the datagram it came from.
type hello struct {
	legacyVersion uint16   // 0xfefd for both DTLS 1.2 and 1.3 ClientHellos
	versions      []uint16 // supported_versions; empty: DTLS 1.2 only
	cookie        bool     // answers a HelloVerifyRequest or HelloRetryRequest
	suites        []uint16
	serverName    string // host_name of server_name; "" when absent
	modes         uint8  // offersPSKKE | offersPSKDHE
	groups        []uint16
	keyShares     []uint16 // groups that carry a key share
	identities    [][]byte // pre_shared_key identities (DTLS 1.3)
	recordSeq     [6]byte  // record sequence number, echoed by stateless answers
}

// offers13 reports whether the hello offers DTLS 1.3.
func (h *hello) offers13() bool { return slices.Contains(h.versions, 0xfefc) }

// offers12 reports whether the hello offers DTLS 1.2.
func (h *hello) offers12() bool {
	return len(h.versions) == 0 && h.legacyVersion == 0xfefd || slices.Contains(h.versions, 0xfefd)
}

// parseHello reads the ClientHello of a datagram that isClientHello
// accepted. served reports whether a cipher suite is served.
func parseHello(p []byte, served func(uint16) bool) (hello, helloVerdict) {
	var h hello
	if !isClientHello(p) {
		return h, helloMalformed
	}
	copy(h.recordSeq[:], p[5:11])
	recLen := int(binary.BigEndian.Uint16(p[11:13]))
	hs := p[recordHeaderLen:]
	if recLen > len(hs) || recLen < handshakeHeaderLen {
		return h, helloMalformed
	}
	hs = hs[:recLen]
	msgLen := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
	fragOff := int(hs[6])<<16 | int(hs[7])<<8 | int(hs[8])
	fragLen := int(hs[9])<<16 | int(hs[10])<<8 | int(hs[11])
	if fragOff != 0 || fragLen > msgLen || len(hs) < handshakeHeaderLen+fragLen {
		return h, helloMalformed
	}
	if fragLen != msgLen {
		return h, helloFragmented
	}
	s := cryptobyte.String(hs[handshakeHeaderLen : handshakeHeaderLen+msgLen])
	var session, cookie, suites, compression cryptobyte.String
	if !s.ReadUint16(&h.legacyVersion) || !s.Skip(32) ||
		!s.ReadUint8LengthPrefixed(&session) || !s.ReadUint8LengthPrefixed(&cookie) ||
		!s.ReadUint16LengthPrefixed(&suites) || len(suites)%2 != 0 ||
		!s.ReadUint8LengthPrefixed(&compression) {
		return h, helloMalformed
	}
	h.cookie = len(cookie) > 0
	common := false
	for !suites.Empty() {
		var id uint16
		suites.ReadUint16(&id)
		h.suites = append(h.suites, id)
		common = common || served(id)
	}
	if s.Empty() {
		return h, helloNoExtensions
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return h, helloMalformed
	}
	for !exts.Empty() {
		var typ uint16
		var body cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&body) {
			return h, helloMalformed
		}
		if !h.readExtension(typ, body) {
			return h, helloMalformed
		}
	}
	if !common {
		return h, helloNoCommonSuite
	}
	return h, helloOK
}

// readExtension records the extensions the gateway decides on; it reports
// false for a malformed one.
func (h *hello) readExtension(typ uint16, body cryptobyte.String) bool {
	switch typ {
	case extServerName: // RFC 6066 §3
		var list cryptobyte.String
		if !body.ReadUint16LengthPrefixed(&list) {
			return false
		}
		for !list.Empty() {
			var nameType uint8
			var name cryptobyte.String
			if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) {
				return false
			}
			if nameType == 0 && h.serverName == "" {
				h.serverName = string(name)
			}
		}
	case extSupportedVersions: // RFC 8446 §4.2.1
		var list cryptobyte.String
		if !body.ReadUint8LengthPrefixed(&list) || len(list)%2 != 0 {
			return false
		}
		for !list.Empty() {
			var v uint16
			list.ReadUint16(&v)
			h.versions = append(h.versions, v)
		}
	case extSupportedGroups: // RFC 8446 §4.2.7
		var list cryptobyte.String
		if !body.ReadUint16LengthPrefixed(&list) || len(list)%2 != 0 {
			return false
		}
		for !list.Empty() {
			var g uint16
			list.ReadUint16(&g)
			h.groups = append(h.groups, g)
		}
	case extKeyShare: // RFC 8446 §4.2.8
		var list cryptobyte.String
		if !body.ReadUint16LengthPrefixed(&list) {
			return false
		}
		for !list.Empty() {
			var g uint16
			var share cryptobyte.String
			if !list.ReadUint16(&g) || !list.ReadUint16LengthPrefixed(&share) {
				return false
			}
			h.keyShares = append(h.keyShares, g)
		}
	case extPSKKeyExchangeModes: // RFC 8446 §4.2.9
		var list cryptobyte.String
		if !body.ReadUint8LengthPrefixed(&list) {
			return false
		}
		for _, m := range list {
			switch m {
			case 0:
				h.modes |= offersPSKKE
			case 1:
				h.modes |= offersPSKDHE
			}
		}
	case extPreSharedKey: // RFC 8446 §4.2.11
		var ids cryptobyte.String
		if !body.ReadUint16LengthPrefixed(&ids) {
			return false
		}
		for !ids.Empty() {
			var id cryptobyte.String
			var age uint32
			if !ids.ReadUint16LengthPrefixed(&id) || !ids.ReadUint32(&age) {
				return false
			}
			h.identities = append(h.identities, append([]byte(nil), id...))
		}
	case extCookie: // RFC 8446 §4.2.2
		h.cookie = true
	}
	return true
}

// alertHandshakeFailure is the datagram that refuses a ClientHello without
// any per-peer state: one plaintext fatal handshake_failure(40) alert in
// epoch 0 (RFC 6347 §4.1, RFC 8446 §6), echoing the hello's record sequence
// number as a HelloVerifyRequest would (RFC 6347 §4.2.1). It is smaller
// than the hello it answers, so it amplifies nothing.
func alertHandshakeFailure(h *hello) []byte {
	return plaintextAlert(40, h.recordSeq)
}

// plaintextAlert is a fatal alert record in epoch 0.
func plaintextAlert(description byte, seq [6]byte) []byte {
	b := []byte{contentTypeAlert, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, alertFatal, description}
	copy(b[5:11], seq[:])
	return b
}
