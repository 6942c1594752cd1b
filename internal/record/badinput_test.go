package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/protocol"
)

// badSetups: one per suite, CIDs issued by both sides where the version
// allows, plus 1.2 without CIDs.
func badSetups() []setup {
	var out []setup
	for _, s := range allSetups() {
		if s.cid == cidBoth || (s.version == protocol.Version1_2 && s.cid == cidNone) {
			out = append(out, s)
		}
	}
	return out
}

// snapshot returns the Conn's encoded state.
func snapshot(t testing.TB, c *Conn) []byte {
	t.Helper()
	b, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mustReject opens a bad datagram and checks that nothing authenticated,
// the reason is want (when set) and the Conn's state is unchanged.
func mustReject(t *testing.T, c *Conn, name string, datagram []byte, want error) {
	t.Helper()
	before := snapshot(t, c)
	var d Datagram
	err := c.Open(&d, bytes.Clone(datagram), time.Now())
	if err == nil || d.Authenticated || d.Newer || len(d.Payloads) != 0 || len(d.Replies) != 0 || d.Closed {
		t.Fatalf("%s: accepted (err %v, %+v)", name, err, d)
	}
	if want != nil && !errors.Is(err, want) {
		t.Fatalf("%s: %v, want %v", name, err, want)
	}
	if !bytes.Equal(before, snapshot(t, c)) {
		t.Fatalf("%s: state changed", name)
	}
}

// TestBadInput: forged (every bit flipped), truncated, oversized, replayed,
// wrong-epoch and wrong-CID records are dropped with their reason, counted,
// and leave the Conn's state (replay window, keys, epochs) unchanged; the
// good record still opens afterwards.
func TestBadInput(t *testing.T) {
	for _, s := range badSetups() {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			if _, err := ss.client.Write([]byte("a valid record, long enough to flip")); err != nil {
				t.Fatal(err)
			}
			rec := bytes.Clone(ss.fromClient())
			c := ss.conn
			fails := c.Stats().AuthFailures

			for i := range rec {
				for bit := range 8 {
					b := bytes.Clone(rec)
					b[i] ^= 1 << bit
					mustReject(t, c, "bit flip", b, nil)
				}
			}
			if c.Stats().AuthFailures <= fails {
				t.Fatal("forged records not counted as authentication failures")
			}
			for n := range len(rec) {
				mustReject(t, c, "truncated", rec[:n], nil)
			}
			mustReject(t, c, "oversized", oversized(s, rec), ErrMalformed)
			mustReject(t, c, "wrong epoch", wrongEpoch(s, rec), nil)
			if s.cid == cidBoth {
				b := bytes.Clone(rec)
				b[cidOffset(s)] ^= 0xff
				mustReject(t, c, "wrong CID", b, ErrCID)
				mustReject(t, c, "without CID", withoutCID(s, rec), ErrCID)
			}

			var d Datagram
			if err := c.Open(&d, bytes.Clone(rec), time.Now()); err != nil || !d.Newer {
				t.Fatalf("the good record after the bad ones: %v, newer %v", err, d.Newer)
			}
			mustReject(t, c, "replayed", rec, ErrReplay)
		})
	}
}

func cidOffset(s setup) int {
	if s.version == protocol.Version1_2 {
		return 11
	}
	return 1
}

// oversized builds a record of the right shape whose ciphertext exceeds
// the version's limit.
func oversized(s setup, rec []byte) []byte {
	n := maxCiphertext12 + 1
	if s.version == protocol.Version1_3 {
		n = maxCiphertext13 + 1
	}
	hdrLen := headerLen(s, rec)
	b := append(bytes.Clone(rec[:hdrLen]), make([]byte, n)...)
	binary.BigEndian.PutUint16(b[hdrLen-2:], uint16(n))
	return b
}

// headerLen is the header length of the (first) record of a datagram the
// pion client wrote: 1.3 with S and L bits, 1.2 with or without CID.
func headerLen(s setup, rec []byte) int {
	if s.version == protocol.Version1_2 {
		if rec[0] == ctCID {
			return recordHeader12 + serverCIDLen
		}
		return recordHeader12
	}
	n := 1 + 2 + 2
	if rec[0]&bitC != 0 {
		n += serverCIDLen
	}
	return n
}

func wrongEpoch(s setup, rec []byte) []byte {
	b := bytes.Clone(rec)
	if s.version == protocol.Version1_2 {
		b[4] = 2
	} else {
		b[0] ^= 1 // epoch bits 3 → 2: the handshake keys, which do not open it
	}
	return b
}

func withoutCID(s setup, rec []byte) []byte {
	off := cidOffset(s)
	b := append(bytes.Clone(rec[:off]), rec[off+serverCIDLen:]...)
	if s.version == protocol.Version1_2 {
		b[0] = ctApplicationData
	} else {
		b[0] &^= bitC
	}
	return b
}
