package gateway

// The few record-header facts the demultiplexer needs before pion sees a
// datagram. pion's recordlayer.ParseRecord wants exactly one whole record and
// its CID router is internal, so these byte offsets are read here, each with
// the section that defines it.

const (
	contentTypeHandshake = 22 // RFC 6347 §4.1
	contentTypeTLS12CID  = 25 // RFC 9146 §4: tls12_cid
	handshakeClientHello = 1  // RFC 6347 §4.2.2 / RFC 9147 §5
	recordHeaderLen      = 13 // type(1) version(2) epoch(2) sequence(6) length(2)
	handshakeHeaderLen   = 12 // RFC 6347 §4.2.2
)

// recordCID returns the Connection ID of the first record of a datagram, or
// nil when it carries none. cidLen is the length the gateway issues (the
// records do not say it).
func recordCID(p []byte, cidLen int) []byte {
	if cidLen <= 0 || len(p) == 0 {
		return nil
	}
	switch {
	case p[0] == contentTypeTLS12CID:
		// RFC 9146 §4: type, version, epoch, sequence_number (11 bytes), then cid.
		if len(p) < 11+cidLen+2 {
			return nil
		}
		return p[11 : 11+cidLen]
	case p[0]&0xe0 == 0x20:
		// RFC 9147 §4: unified header 001CSLEE; C bit means a CID follows.
		if p[0]&0x10 == 0 || len(p) < 1+cidLen {
			return nil
		}
		return p[1 : 1+cidLen]
	}
	return nil
}

// isClientHello reports whether a datagram starts with a plaintext, epoch-0
// handshake record holding (the first fragment of) a ClientHello: the only
// datagram that may create a session.
func isClientHello(p []byte) bool {
	if len(p) < recordHeaderLen+handshakeHeaderLen {
		return false
	}
	if p[0] != contentTypeHandshake || p[1] != 0xfe || p[3] != 0 || p[4] != 0 {
		return false
	}
	return p[recordHeaderLen] == handshakeClientHello
}
