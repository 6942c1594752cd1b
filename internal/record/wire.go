package record

// Wire constants, each with the section that defines it.
const (
	ctChangeCipherSpec = 20 // RFC 6347 §4.1
	ctAlert            = 21
	ctHandshake        = 22
	ctApplicationData  = 23
	ctCID              = 25 // RFC 9146 §4: tls12_cid
	ctACK              = 26 // RFC 9147 §7

	recordHeader12 = 13 // type(1) version(2) epoch(2) sequence_number(6) length(2)

	hsFinished            = 20 // RFC 8446 §4
	hsKeyUpdate           = 24
	hsRequestConnectionID = 9  // RFC 9147 §9
	hsNewConnectionID     = 10 // RFC 9147 §9
	handshakeHeader       = 12 // RFC 9147 §5.2: type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3)

	alertWarning      = 1 // RFC 5246 §7.2
	alertFatal        = 2
	alertCloseNotify  = 0
	alertUserCanceled = 90

	// maxPlaintext is the largest record payload (RFC 6347 §4.1, RFC 8446
	// §5.1); ciphertexts may exceed it by 2048 (1.2) or 256 (1.3) bytes.
	maxPlaintext    = 1 << 14
	maxCiphertext12 = maxPlaintext + 2048
	maxCiphertext13 = maxPlaintext + 256

	// Unified header bits, RFC 9147 §4: 0 0 1 C S L E E.
	unifiedFixed = 0x20
	unifiedMask  = 0xe0
	bitC         = 0x10
	bitS         = 0x08
	bitL         = 0x04
)

// version12 is DTLS 1.2 on the wire (RFC 6347 §4.1).
var version12 = [2]byte{0xfe, 0xfd}

func be48(b []byte) uint64 {
	_ = b[5]
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}

func putBE48(b []byte, v uint64) {
	_ = b[5]
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}
