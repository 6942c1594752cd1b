package gateway

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"net/netip"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
	"go.uber.org/zap"
)

// selectPSK is pion's server PSK callback (DTLS 1.3: on the ClientHello;
// DTLS 1.2: on the ClientKeyExchange). The first offered identity the store
// knows wins.
//
// An identity the store does not know — or a store that fails — is answered
// with a dummy key derived from a per-process secret and the identity, so
// the handshake fails exactly as with a known identity and a wrong key
// (issue 9.3): DTLS 1.3 ends with decrypt_error when the binder does not
// verify, DTLS 1.2 with silence when the client's Finished does not
// decrypt, in the same time and with the same messages, and a retry with
// the same identity meets the same key. Logs and metrics keep the real
// reason (unknown_identity, store_error).
func (hs *handshake) selectPSK(identities [][]byte) (*dtls.PSK, error) {
	if len(identities) == 0 {
		return nil, nil
	}
	hs.mu.Lock()
	if hs.hasKey || hs.dummy {
		// DTLS 1.3 asks again for the ClientHello that answers the
		// cookie; the identities are the same (RFC 8446 §4.1.2).
		for _, id := range identities {
			if bytes.Equal(id, hs.key.Identity) {
				psk := hs.psk()
				hs.mu.Unlock()
				return psk, nil
			}
		}
	}
	hs.mu.Unlock()
	srv := hs.srv
	gen := srv.keyChanges.Load()
	for i, id := range identities {
		if i == maxOfferedIdentities {
			break
		}
		key, err := srv.lookupKey(id)
		if errors.Is(err, pskstore.ErrUnknownIdentity) {
			continue
		}
		if err != nil {
			srv.storeErrors.Inc()
			hs.setFailure("store_error")
			srv.sampled.Warn("key store lookup failed", zap.Error(err))
			break
		}
		hs.mu.Lock()
		hs.key, hs.hasKey, hs.dummy, hs.keyGen = key, true, false, gen
		psk := hs.psk()
		hs.mu.Unlock()
		return psk, nil
	}
	hs.setFailure("unknown_identity")
	hs.mu.Lock()
	hs.key = pskstore.Key{Identity: bytes.Clone(identities[0]), Secret: srv.dummyKey(identities[0]), Hash: hs.dummyHash()}
	hs.dummy = true
	psk := hs.psk()
	hs.mu.Unlock()
	return psk, nil
}

// maxOfferedIdentities bounds the store lookups one ClientHello can cause.
const maxOfferedIdentities = 8

// psk is the pion form of the selected key. Called with hs.mu held.
func (hs *handshake) psk() *dtls.PSK {
	return &dtls.PSK{Identity: hs.key.Identity, Key: hs.key.Secret, Hash: keyHash(hs.key)}
}

// lookupKey resolves one identity under the lookup timeout.
func (srv *Server) lookupKey(identity []byte) (pskstore.Key, error) {
	ctx, cancel := srv.lookupContext()
	defer cancel()
	start := time.Now()
	key, err := srv.cfg.Store.Lookup(ctx, identity)
	srv.lookup.Observe(time.Since(start).Seconds())
	return key, err
}

// dummyKey is the key an unknown identity meets: HMAC-SHA-256 of the
// identity under a random per-process secret, so it is stable across
// retries and unrelated to any real key.
func (srv *Server) dummyKey(identity []byte) []byte {
	m := hmac.New(sha256.New, srv.dummySecret[:])
	m.Write([]byte("gateway unknown identity\x00"))
	m.Write(identity)
	return m.Sum(nil)
}

// dummyHash is the PSK hash of a dummy key: SHA-384 when the ClientHello
// offers only SHA-384 DTLS 1.3 suites, as a real SHA-384 key would need.
func (hs *handshake) dummyHash() crypto.Hash {
	sha256Offered, sha384Offered := false, false
	for _, id := range hs.hello.suites {
		switch ciphersuite.ID(id) {
		case ciphersuite.TLS_AES_128_GCM_SHA256, ciphersuite.TLS_CHACHA20_POLY1305_SHA256:
			sha256Offered = true
		case ciphersuite.TLS_AES_256_GCM_SHA384:
			sha384Offered = true
		}
	}
	if sha384Offered && !sha256Offered {
		return crypto.SHA384
	}
	return crypto.SHA256
}

// onFlight inspects each datagram pion writes before it leaves (hsConn). It
// advances the handshake's phase and applies the session policy at the
// last moment the device has not yet been told anything:
//
//   - DTLS 1.3: at the ServerHello. pion has selected the key and verified
//     the binder (a device without the key gets decrypt_error before any
//     policy is looked at, like an unknown identity), and the ClientHello
//     already decided version, mode and server name. A refusal replaces the
//     server's flight with handshake_failure: the device never sees a
//     ServerHello, let alone a Finished (issue 9.4).
//   - DTLS 1.2: at the server's ChangeCipherSpec + Finished. The key is only
//     known from the ClientKeyExchange; pion has verified the client's
//     Finished. A refusal is the same handshake_failure, in place of the
//     server's Finished.
//
// Every policy refusal is therefore one plaintext handshake_failure(40)
// alert, and nothing is ever forwarded for a refused handshake.
func (hs *handshake) onFlight(p []byte) flightVerdict {
	if len(p) < recordHeaderLen+1 {
		return flightSend
	}
	epoch0 := p[3] == 0 && p[4] == 0
	switch {
	case p[0] == contentTypeHandshake && epoch0 && len(p) > recordHeaderLen:
		switch p[recordHeaderLen] {
		case handshakeHelloVerifyRequest:
			return flightSend // DTLS 1.2 cookie: still embryonic
		case handshakeServerHello:
			if isHelloRetryRequest(p) {
				return flightSend // DTLS 1.3 cookie (or group) retry
			}
			hs.verified()
			hs.mu.Lock()
			v := hs.version
			hs.mu.Unlock()
			if v == protocol.Version1_3 {
				return hs.policyAtFlight()
			}
		}
	case p[0] == contentTypeCCS:
		return hs.policyAtFlight()
	case p[0] == contentTypeAlert && epoch0 && len(p) >= recordHeaderLen+2:
		switch p[recordHeaderLen+1] {
		case 51, 20: // decrypt_error (binder), bad_record_mac
			hs.setFailure("bad_key")
		}
	}
	return flightSend
}

// verified records that the device answered the cookie.
func (hs *handshake) verified() {
	if hs.phase.CompareAndSwap(phaseEmbryonic, phaseVerified) {
		hs.srv.admission.verified(hs)
	}
}

// policyAtFlight applies the session policy (policy.go) to the handshake's
// key and negotiated parameters.
func (hs *handshake) policyAtFlight() flightVerdict {
	hs.mu.Lock()
	key, hasKey, pskOnly, version, suite, cancel := hs.key, hs.hasKey, hs.pskOnly, hs.version, hs.suite, hs.cancel
	hs.mu.Unlock()
	if !hasKey {
		return flightSend // a dummy key: the binder or Finished fails anyway
	}
	err := checkSession(key, sessionParams{version: version, suite: suite, pskOnly: pskOnly,
		serverName: hs.hello.serverName, missingSNI: hs.l.missingSNI})
	if err == nil {
		return flightSend
	}
	var pe *pskstore.PolicyError
	if errors.As(err, &pe) {
		hs.setFailure("policy_" + string(pe.Rule))
	}
	hs.mu.Lock()
	hs.refused = true
	hs.mu.Unlock()
	hs.srv.sampled.Warn("handshake refused", zap.Stringer("remote", hs.peer),
		zap.String("identity_tag", hs.srv.tag(key.Identity)), zap.Error(err))
	if cancel != nil {
		cancel()
	}
	return flightRefuse
}

// helloRetryRandom is the ServerHello.random of a HelloRetryRequest
// (RFC 8446 §4.1.3): SHA-256("HelloRetryRequest").
var helloRetryRandom = [32]byte{
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
}

// isHelloRetryRequest reports whether a plaintext ServerHello record is a
// HelloRetryRequest: legacy_version(2) then random(32) after the headers.
func isHelloRetryRequest(p []byte) bool {
	off := recordHeaderLen + handshakeHeaderLen + 2
	return len(p) >= off+32 && bytes.Equal(p[off:off+32], helloRetryRandom[:])
}

// deliver hands a datagram from the device to pion, noting a DTLS 1.2
// client Finished (an epoch-1 handshake record) for the failure reason.
func (hs *handshake) deliver(p []byte, from netip.AddrPort) bool {
	if isClientHello(p) && helloMessageSeq(p) > 0 {
		hs.noteAnswer(time.Now()) // the ClientHello that answers the cookie
	}
	if hasEpoch1Handshake(p, hs.srv.cfg.CIDLength) {
		hs.mu.Lock()
		hs.clientF = true
		hs.mu.Unlock()
	}
	return hs.conn.deliver(p, from)
}

// deliverOrForward delivers to the handshake or, if it has just become a
// session (a route read before the hand-over), to that session.
func (hs *handshake) deliverOrForward(p []byte, from netip.AddrPort) {
	if hs.deliver(p, from) {
		return
	}
	if s := hs.successor.Load(); s != nil {
		s.fromWire(p, from)
		return
	}
	hs.srv.stats.drop(dropQueueFull)
}

// hasEpoch1Handshake reports whether a DTLS 1.2 datagram holds a handshake
// record in epoch 1 — the client's encrypted Finished — possibly behind its
// ClientKeyExchange and ChangeCipherSpec in the same datagram (RFC 6347
// §4.1 records, RFC 9146 §4 for tls12_cid records carrying our CID).
func hasEpoch1Handshake(p []byte, cidLen int) bool {
	for len(p) >= recordHeaderLen {
		lenOff := 11
		if p[0] == contentTypeTLS12CID {
			lenOff += max(cidLen, 0)
		}
		if len(p) < lenOff+2 {
			return false
		}
		if (p[0] == contentTypeHandshake || p[0] == contentTypeTLS12CID) && p[3] == 0 && p[4] == 1 {
			return true
		}
		n := lenOff + 2 + (int(p[lenOff])<<8 | int(p[lenOff+1]))
		if n > len(p) {
			return false
		}
		p = p[n:]
	}
	return false
}

// lookupContext bounds one store lookup; lookups end when the server closes.
func (srv *Server) lookupContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(srv.serving(), srv.cfg.LookupTimeout)
}

// handshakeContext bounds one handshake; it ends when the server closes.
func (srv *Server) handshakeContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(srv.serving(), srv.cfg.HandshakeTimeout)
}
