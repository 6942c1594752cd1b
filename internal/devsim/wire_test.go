package devsim

import (
	"encoding/binary"
	"os"
	"testing"

	"github.com/pion/dtls/v4/pkg/protocol/extension"
	extension13 "github.com/pion/dtls/v4/pkg/protocol/extension/dtls13"
	"github.com/pion/dtls/v4/pkg/protocol/handshake"
	"go.uber.org/zap"
)

// testLogger returns a development logger when DEVSIM_LOG is set, else a
// no-op one (zaptest would panic on pion goroutines logging after a test).
func testLogger(*testing.T) *zap.Logger {
	if os.Getenv("DEVSIM_LOG") != "" {
		l, _ := zap.NewDevelopment()
		return l
	}
	return zap.NewNop()
}

func uint24(b []byte) int { return int(b[0])<<16 | int(b[1])<<8 | int(b[2]) }

// plaintextHandshakes returns the bodies of the unfragmented handshake
// messages of type typ carried in epoch-0 plaintext records (RFC 9147 §4,
// §5.2: 13-byte record header, 12-byte handshake header).
func plaintextHandshakes(datagrams [][]byte, typ handshake.Type) [][]byte {
	var bodies [][]byte
	for _, d := range datagrams {
		for len(d) >= 13 && d[0] >= 20 && d[0] <= 24 { // legacy header, no CID
			length := int(binary.BigEndian.Uint16(d[11:13]))
			if len(d) < 13+length {
				break
			}
			epoch := binary.BigEndian.Uint16(d[3:5])
			rec := d[13 : 13+length]
			plain := d[0] == 22 && epoch == 0
			d = d[13+length:]
			for plain && len(rec) >= 12 {
				hlen, off, flen := uint24(rec[1:4]), uint24(rec[6:9]), uint24(rec[9:12])
				if len(rec) < 12+flen {
					break
				}
				if handshake.Type(rec[0]) == typ && off == 0 && flen == hlen {
					bodies = append(bodies, rec[12:12+flen])
				}
				rec = rec[12+flen:]
			}
		}
	}
	return bodies
}

// offeredModes returns the psk_key_exchange_modes of every ClientHello.
func offeredModes(t *testing.T, fromClient [][]byte) [][]extension13.PSKKeyExchangeMode {
	t.Helper()
	var all [][]extension13.PSKKeyExchangeMode
	for _, body := range plaintextHandshakes(fromClient, handshake.TypeClientHello) {
		var hello handshake.MessageClientHello
		if err := hello.Unmarshal(body); err != nil {
			t.Fatalf("parse ClientHello: %v", err)
		}
		var modes []extension13.PSKKeyExchangeMode
		for _, ext := range hello.Extensions {
			if m, ok := ext.(*extension13.PSKKeyExchangeModes); ok {
				modes = m.Modes
			}
		}
		all = append(all, modes)
	}
	return all
}

// serverHelloKeyShare reports whether the (non-HRR) ServerHello carries a
// key_share: yes for psk_dhe_ke, no for psk_ke (RFC 8446 §4.2.8, §4.2.9).
func serverHelloKeyShare(t *testing.T, fromServer [][]byte) bool {
	t.Helper()
	for _, body := range plaintextHandshakes(fromServer, handshake.TypeServerHello) {
		var hello handshake.MessageServerHello
		if err := hello.Unmarshal(body); err != nil {
			t.Fatalf("parse ServerHello: %v", err)
		}
		random := hello.Random.MarshalFixed()
		if string(random[:]) == string(handshake.HelloRetryRequestRandom()) {
			continue
		}
		for _, ext := range hello.Extensions {
			if ext.ExtensionType() == extension.TypeKeyShare {
				return true
			}
		}
		return false
	}
	t.Fatal("no ServerHello seen")
	return false
}

// sentCID reports whether any client record carries a Connection ID: a
// DTLS 1.3 unified header with the C bit (RFC 9147 §4), or a DTLS 1.2
// tls12_cid record (RFC 9146 §4).
func sentCID(fromClient [][]byte) bool {
	for _, d := range fromClient {
		if len(d) > 0 && (d[0]&0xf0 == 0x30 || d[0] == 25) {
			return true
		}
	}
	return false
}

// groupRetries counts HelloRetryRequests that ask for another key-share
// group (they carry key_share; a cookie-only retry does not).
func groupRetries(t *testing.T, fromServer [][]byte) int {
	t.Helper()
	n := 0
	for _, body := range plaintextHandshakes(fromServer, handshake.TypeServerHello) {
		var hello handshake.MessageServerHello
		if err := hello.Unmarshal(body); err != nil {
			t.Fatalf("parse ServerHello: %v", err)
		}
		random := hello.Random.MarshalFixed()
		if string(random[:]) != string(handshake.HelloRetryRequestRandom()) {
			continue
		}
		for _, ext := range hello.Extensions {
			if ext.ExtensionType() == extension.TypeKeyShare {
				n++
			}
		}
	}
	return n
}
