package gateway

// The few record-header facts the demultiplexer needs before any record
// layer sees a datagram: where the Connection ID is, whether a datagram is a
// plaintext ClientHello, and whether a record belongs to a handshake or to
// an established session. pion's recordlayer.ParseRecord wants exactly one
// whole record and its CID router is internal, so these byte offsets are
// read here, each with the section that defines it.

const (
	contentTypeCCS       = 20 // RFC 6347 §4.1
	contentTypeAlert     = 21
	contentTypeHandshake = 22
	contentTypeAppData   = 23
	contentTypeTLS12CID  = 25 // RFC 9146 §4: tls12_cid
	contentTypeACK       = 26 // RFC 9147 §7

	handshakeClientHello        = 1 // RFC 6347 §4.2.2 / RFC 9147 §5
	handshakeServerHello        = 2
	handshakeHelloVerifyRequest = 3

	recordHeaderLen    = 13 // type(1) version(2) epoch(2) sequence(6) length(2)
	handshakeHeaderLen = 12 // RFC 6347 §4.2.2

	alertFatal = 2
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
	case isUnifiedHeader(p[0]):
		// RFC 9147 §4: unified header 001CSLEE; C bit means a CID follows.
		if p[0]&0x10 == 0 || len(p) < 1+cidLen {
			return nil
		}
		return p[1 : 1+cidLen]
	}
	return nil
}

// isUnifiedHeader reports whether a record's first byte is a DTLS 1.3
// unified header (RFC 9147 §4: the top three bits are 001).
func isUnifiedHeader(b byte) bool { return b&0xe0 == 0x20 }

// isClientHello reports whether a datagram starts with a plaintext, epoch-0
// handshake record holding (the first fragment of) a ClientHello: the only
// datagram that may start a handshake.
func isClientHello(p []byte) bool {
	if len(p) < recordHeaderLen+handshakeHeaderLen {
		return false
	}
	if p[0] != contentTypeHandshake || p[1] != 0xfe || p[3] != 0 || p[4] != 0 {
		return false
	}
	return p[recordHeaderLen] == handshakeClientHello
}

// isApplicationRecord reports whether the first record of a datagram
// received during a handshake is application data: a DTLS 1.3 record
// beyond the handshake epoch (epoch bits other than 2: a handshake in
// progress reads epochs 0 to 2, RFC 9147 §6.1), or a DTLS 1.2
// application_data record. A DTLS 1.2 tls12_cid record hides its type; it
// can only carry application data once pion has sent its final flight, and
// the hand-over drains pion for it.
func isApplicationRecord(p []byte) bool {
	if len(p) == 0 {
		return false
	}
	if isUnifiedHeader(p[0]) {
		return p[0]&0x03 != 2
	}
	return p[0] == contentTypeAppData
}

// isEpoch0 reports whether the first record of a datagram is a plaintext
// epoch-0 record (a DTLS 1.2/1.3 record header with epoch 0).
func isEpoch0(p []byte) bool {
	return len(p) >= recordHeaderLen && !isUnifiedHeader(p[0]) && p[3] == 0 && p[4] == 0
}

// isHandshakeRecord reports whether the first record of a datagram from an
// address that has both an established session and a handshake in progress
// belongs to the handshake: a plaintext epoch-0 record, a DTLS 1.2
// ChangeCipherSpec or handshake record (the client's Finished is a type-22
// record in epoch 1, while the established session's data are type 23), or
// a DTLS 1.3 record in epoch 2 (handshake traffic; application data are
// epoch 3 and later, RFC 9147 §6.1). A DTLS 1.3 session that has gone
// through four KeyUpdates shares the low epoch bits 2 with handshake
// traffic; such a record goes to the handshake, which drops it, and the
// device's retransmission after the handshake reaches the new session.
func isHandshakeRecord(p []byte) bool {
	if len(p) < 3 {
		return false
	}
	if isUnifiedHeader(p[0]) {
		return p[0]&0x03 == 2
	}
	if len(p) < recordHeaderLen {
		return false
	}
	epoch0 := p[3] == 0 && p[4] == 0
	switch p[0] {
	case contentTypeCCS, contentTypeHandshake:
		return true
	case contentTypeAlert, contentTypeACK:
		return epoch0
	}
	return false
}
