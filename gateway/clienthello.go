package gateway

import (
	"encoding/binary"
	"slices"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol/handshake"
)

type ciphersuiteID = ciphersuite.ID

// helloVerdict is what the demultiplexer learns from a ClientHello before
// any per-peer state exists.
type helloVerdict uint8

const (
	helloOK            helloVerdict = iota
	helloMalformed                  // does not parse as a ClientHello
	helloNoCommonSuite              // offers none of the suites this gateway serves
)

// inspectClientHello parses the first ClientHello of a new peer with pion's
// own message parser and refuses, before a session is created, one this
// gateway can never serve: a scanner's certificate-only or garbage hello
// costs a parse, not a DTLS connection. A fragmented ClientHello (rare for
// PSK: no certificates, one key share) is let through for pion to reassemble.
func (srv *Server) inspectClientHello(p []byte) helloVerdict {
	if len(p) < recordHeaderLen+handshakeHeaderLen {
		return helloMalformed
	}
	recLen := int(binary.BigEndian.Uint16(p[11:13]))
	hs := p[recordHeaderLen:]
	if recLen > len(hs) {
		return helloMalformed
	}
	hs = hs[:recLen]
	if len(hs) < handshakeHeaderLen {
		return helloMalformed
	}
	msgLen := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
	fragOff := int(hs[6])<<16 | int(hs[7])<<8 | int(hs[8])
	fragLen := int(hs[9])<<16 | int(hs[10])<<8 | int(hs[11])
	if fragOff != 0 || fragLen != msgLen || len(hs) < handshakeHeaderLen+msgLen {
		return helloOK // fragmented: pion reassembles and decides
	}
	var hello handshake.MessageClientHello
	if err := hello.Unmarshal(hs[handshakeHeaderLen : handshakeHeaderLen+msgLen]); err != nil {
		return helloMalformed
	}
	for _, id := range hello.CipherSuiteIDs {
		if slices.ContainsFunc(srv.cfg.CipherSuites, func(s ciphersuiteID) bool { return uint16(s) == id }) {
			return helloOK
		}
	}
	return helloNoCommonSuite
}
