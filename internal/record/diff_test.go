package record

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/pion/dtls/v4/pkg/protocol"
)

// TestDifferential: records the pion client seals are opened by our Conn and
// records our Conn seals are read by the pion client, for every suite, both
// versions and every CID arrangement.
func TestDifferential(t *testing.T) {
	for _, s := range allSetups() {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			for i := range 3 {
				msg := []byte(fmt.Sprintf("device→gateway %d %s", i, bytes.Repeat([]byte{'x'}, i*50)))
				if _, err := ss.client.Write(msg); err != nil {
					t.Fatal(err)
				}
				got := ss.openApp()
				if len(got) != 1 || !bytes.Equal(got[0], msg) {
					t.Fatalf("opened %q, want %q", got, msg)
				}
				if c := hasCID(s, ss.raw); c != (s.cid == cidServer || s.cid == cidBoth) {
					t.Fatalf("client record carries a CID: %v, mode %s", c, s.cid)
				}
				reply := []byte(fmt.Sprintf("gateway→device %d %s", i, bytes.Repeat([]byte{'y'}, i*70)))
				rec, err := ss.conn.Seal(nil, reply)
				if err != nil {
					t.Fatal(err)
				}
				if c := hasCID(s, rec); c != (s.cid == cidClient || s.cid == cidBoth) {
					t.Fatalf("our record carries a CID: %v, mode %s", c, s.cid)
				}
				ss.toClient(rec)
				if got := ss.clientRead(); !bytes.Equal(got, reply) {
					t.Fatalf("client read %q, want %q", got, reply)
				}
			}
		})
	}
}

// hasCID reports whether the first record of a datagram carries a CID.
func hasCID(s setup, d []byte) bool {
	if s.version == protocol.Version1_2 {
		return d[0] == ctCID
	}
	return d[0]&bitC != 0
}
