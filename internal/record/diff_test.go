package record

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

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

// TestCloseNotify: the client's Close (close_notify) closes our Conn, and
// our CloseNotify ends the client's reads; nothing is sealed or opened after.
func TestCloseNotify(t *testing.T) {
	for _, s := range badSetups() {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			rec, err := ss.conn.CloseNotify(nil)
			if err != nil {
				t.Fatal(err)
			}
			ss.toClient(rec)
			_ = ss.client.SetReadDeadline(time.Now().Add(wait))
			if _, err := ss.client.Read(make([]byte, 100)); !errors.Is(err, io.EOF) {
				t.Fatalf("client read after our close_notify: %v, want EOF", err)
			}
			if _, err := ss.conn.Seal(nil, []byte("late")); !errors.Is(err, ErrClosed) {
				t.Fatalf("seal after close_notify: %v", err)
			}

			ss2 := newSession(t, s)
			_ = ss2.client.Close()
			var d Datagram
			if err := ss2.conn.Open(&d, ss2.fromClient(), time.Now()); err != nil || !d.Closed || d.Alert != alertCloseNotify {
				t.Fatalf("client close_notify: %v, %+v", err, d)
			}
			if !ss2.conn.Closed() {
				t.Fatal("Conn not closed by the peer's close_notify")
			}
		})
	}
}

// TestReorderLoss: records reordered and lost in both directions are
// delivered once each; Newer holds only for a record beyond all before it.
func TestReorderLoss(t *testing.T) {
	order := []int{3, 0, 7, 1, 6, 4, 2} // record 5 is lost
	for _, s := range allSetups() {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			var recs [][]byte
			for i := range 8 {
				if _, err := ss.client.Write([]byte(fmt.Sprint("up ", i))); err != nil {
					t.Fatal(err)
				}
				recs = append(recs, ss.fromClient())
			}
			var d Datagram
			highest := -1
			for _, i := range order {
				if err := ss.conn.Open(&d, bytes.Clone(recs[i]), time.Now()); err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				if string(d.Payloads[0]) != fmt.Sprint("up ", i) || d.Newer != (i > highest) {
					t.Fatalf("record %d: %q newer %v", i, d.Payloads, d.Newer)
				}
				highest = max(highest, i)
			}
			if err := ss.conn.Open(&d, recs[3], time.Now()); !errors.Is(err, ErrReplay) {
				t.Fatalf("replayed record 3: %v", err)
			}

			var down [][]byte
			for i := range 8 {
				rec, err := ss.conn.Seal(nil, []byte(fmt.Sprint("down ", i)))
				if err != nil {
					t.Fatal(err)
				}
				down = append(down, rec)
			}
			got := map[string]bool{}
			for _, i := range order {
				ss.toClient(down[i])
				got[string(ss.clientRead())] = true
			}
			for _, i := range order {
				if !got[fmt.Sprint("down ", i)] {
					t.Fatalf("client missed record %d: %v", i, got)
				}
			}
		})
	}
}
