package record

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// TestSnapshotRoundTrip: a snapshot restores a Conn that encodes to the
// same bytes and carries the session on with the pion client, for every
// setup; a 1.3 AES-128 session with CIDs fits in 300 bytes.
func TestSnapshotRoundTrip(t *testing.T) {
	for _, s := range allSetups() {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			ch := ss.startPump(nil)
			ss.roundTrip(ch, "before")
			if s.version == protocol.Version1_3 {
				ss.clientUpdateKeys(true)
				await(t, ch, "our KeyUpdate acknowledged", func(o opened) bool { return o.keysChanged })
			}
			b := snapshot(t, ss.conn)
			t.Logf("snapshot: %d bytes", len(b))
			if s.version == protocol.Version1_3 && s.suite == ciphersuite.TLS_AES_128_GCM_SHA256 && len(b) > 300 {
				t.Fatalf("snapshot of %d bytes, target 300", len(b))
			}
			restored := new(Conn)
			if err := restored.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(snapshot(t, restored), b) {
				t.Fatal("restored Conn encodes differently")
			}
			if restored.NextWriteSeq() != ss.conn.NextWriteSeq() || restored.Stats() != ss.conn.Stats() {
				t.Fatalf("restored %+v, want %+v", restored.Stats(), ss.conn.Stats())
			}
			ss.setConn(restored)
			ss.roundTrip(ch, "after restore")
		})
	}
}

// TestUnmarshalBad: every truncation of a valid snapshot, a wrong format
// version and trailing bytes are refused with ErrSnapshot.
func TestUnmarshalBad(t *testing.T) {
	for _, s := range badSetups() {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			b := snapshot(t, ss.conn)
			for n := range len(b) {
				if err := new(Conn).UnmarshalBinary(b[:n]); !errors.Is(err, ErrSnapshot) {
					t.Fatalf("truncated to %d: %v", n, err)
				}
			}
			bad := bytes.Clone(b)
			bad[0] = 2
			if err := new(Conn).UnmarshalBinary(bad); !errors.Is(err, ErrSnapshot) {
				t.Fatalf("format version 2: %v", err)
			}
			if err := new(Conn).UnmarshalBinary(append(bytes.Clone(b), 0)); !errors.Is(err, ErrSnapshot) {
				t.Fatalf("trailing byte: %v", err)
			}
		})
	}
}

// TestToPionState: our Conn hands the session back to pion (dtls.Resume),
// which goes on talking with the pion client both ways, for every setup.
func TestToPionState(t *testing.T) {
	for _, s := range allSetups() {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			ch := ss.startPump(nil)
			ss.roundTrip(ch, "ours")
			if s.version == protocol.Version1_3 {
				ss.clientUpdateKeys(true)
				await(t, ch, "our KeyUpdate acknowledged", func(o opened) bool { return o.keysChanged })
				ss.roundTrip(ch, "after key update")
			}
			b, err := ss.conn.ToPionState()
			if err != nil {
				t.Fatal(err)
			}
			ss.stopPump()
			var st dtls.State
			if err := st.UnmarshalBinary(b); err != nil {
				t.Fatalf("pion refused the state: %v", err)
			}
			opts := append(s.options(true), dtls.WithPSK(nil, func([][]byte) (*dtls.PSK, error) { return nil, nil }))
			srv, err := dtls.Resume(&st, detach(ss.pipe.server), ss.pipe.server.raddr, opts...)
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			defer srv.Close()
			up := []byte("to pion")
			if _, err := ss.client.Write(up); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			_ = srv.SetReadDeadline(time.Now().Add(wait))
			n, err := srv.Read(buf)
			if err != nil || !bytes.Equal(buf[:n], up) {
				t.Fatalf("resumed pion read %q, %v", buf[:n], err)
			}
			if _, err := srv.Write([]byte("from pion")); err != nil {
				t.Fatal(err)
			}
			if got := ss.clientRead(); string(got) != "from pion" {
				t.Fatalf("client read %q", got)
			}
		})
	}
}
