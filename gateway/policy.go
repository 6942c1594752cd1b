package gateway

import (
	"fmt"
	"strings"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

const (
	versionDTLS12 = protocol.Version1_2
	versionDTLS13 = protocol.Version1_3
)

func versionName(v protocol.Version) string {
	switch v {
	case versionDTLS12:
		return "dtls1.2"
	case versionDTLS13:
		return "dtls1.3"
	}
	return "unknown"
}

// ecdhePSK reports whether a DTLS 1.2 suite combines the PSK with an
// ephemeral ECDH exchange (RFC 5489); the others are plain PSK (RFC 4279).
func ecdhePSK(id ciphersuite.ID) bool {
	switch id {
	case ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
		ciphersuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256:
		return true
	}
	return false
}

// sessionParams is what a handshake negotiated, as far as the policy cares.
type sessionParams struct {
	version    protocol.Version
	suite      ciphersuite.ID
	pskOnly    bool   // DTLS 1.3 psk_ke (no key share)
	serverName string // the ClientHello's server_name; "" when absent
	missingSNI SNIPolicy
}

// mode names the key exchange for logs and metrics.
func (p sessionParams) mode() string {
	switch {
	case p.version == versionDTLS12 && ecdhePSK(p.suite):
		return "ecdhe_psk"
	case p.version == versionDTLS12:
		return "psk"
	case p.pskOnly:
		return "psk_ke"
	}
	return "psk_dhe_ke"
}

// checkSession applies the handshake-time rules to what a handshake
// negotiated: R3 (version, DTLS 1.3 mode, DTLS 1.2 plain-PSK only for
// legacy keys), R2 (a low-entropy key never without an ephemeral exchange)
// and R5 (a ClientHello without server_name on a listener that requires
// one, whatever the key; a server_name other than the identity's bound
// server). The error is a *pskstore.PolicyError.
func checkSession(key pskstore.Key, p sessionParams) error {
	deny := func(rule pskstore.Rule, format string, args ...any) error {
		return &pskstore.PolicyError{Rule: rule, Msg: fmt.Sprintf(format, args...)}
	}
	versions := key.Versions
	if versions == 0 {
		versions = pskstore.DTLS12 | pskstore.DTLS13
	}
	modes := key.Modes
	if modes == 0 {
		modes = pskstore.ModeDHE
	}
	switch p.version {
	case versionDTLS13:
		if !versions.Has(pskstore.DTLS13) {
			return deny("R3", "dtls 1.3 not allowed for this identity")
		}
		if p.pskOnly {
			if key.AllowLowEntropy {
				return deny("R2", "psk_ke refused for a low-entropy key")
			}
			if !modes.Has(pskstore.ModeKE) {
				return deny("R3", "psk_ke not allowed for this identity, psk_dhe_ke required")
			}
		} else if !modes.Has(pskstore.ModeDHE) {
			return deny("R3", "psk_dhe_ke not allowed for this identity")
		}
	case versionDTLS12:
		if !versions.Has(pskstore.DTLS12) {
			return deny("R3", "dtls 1.2 not allowed for this identity")
		}
		if !ecdhePSK(p.suite) {
			if key.AllowLowEntropy {
				return deny("R2", "plain-psk suite %s refused for a low-entropy key", p.suite)
			}
			if !key.Legacy {
				return deny("R3", "plain-psk suite %s needs an identity marked legacy", p.suite)
			}
		}
	default:
		return deny("R3", "unsupported version")
	}
	switch {
	case p.serverName == "" && p.missingSNI == SNIRequire:
		return deny("R5", "client hello without server_name, listener requires it")
	case p.serverName != "" && key.ServerName != "" && !strings.EqualFold(p.serverName, key.ServerName):
		// Rerouting and Selfie (RFC 9257 §4.1): the ClientHello was meant
		// for another server that shares this key.
		return deny("R5", "server_name does not match the identity's bound server")
	}
	return nil
}
