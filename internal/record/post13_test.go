package record

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// peers returns a test-side client (epoch 3) and a reader of our records.
func peers(t *testing.T, ss *session, s setup) (client, server *peer13) {
	client = newPeer13(t, s.suite, keyLogLine(t, ss.params.KeyLog, "CLIENT_TRAFFIC_SECRET_0"), 3)
	server = newPeer13(t, s.suite, keyLogLine(t, ss.params.KeyLog, "SERVER_TRAFFIC_SECRET_0"), 3)
	return client, server
}

func (ss *session) mustOpen(d *Datagram, b []byte, now time.Time) {
	ss.t.Helper()
	if err := ss.conn.Open(d, b, now); err != nil {
		ss.t.Fatalf("open: %v", err)
	}
}

// TestUnifiedHeaderForms (RFC 9147 §4): 8-bit sequence numbers, records
// without a length field, two records in one datagram, and reconstruction
// across the 8-bit wrap, with reordering.
func TestUnifiedHeaderForms(t *testing.T) {
	for _, s := range setups13() {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			cl, _ := peers(t, ss, s)
			cid := ss.conn.ConnectionID()
			var d Datagram
			now := time.Now()
			ss.mustOpen(&d, cl.record(ctApplicationData, []byte("8-bit"), 5, false, true, cid), now)
			ss.mustOpen(&d, cl.record(ctApplicationData, []byte("no length"), 6, true, false, cid), now)
			two := append(cl.record(ctApplicationData, []byte("first"), 7, false, true, cid),
				cl.record(ctApplicationData, []byte("second"), 8, true, false, cid)...)
			ss.mustOpen(&d, two, now)
			if len(d.Payloads) != 2 || string(d.Payloads[0]) != "first" || string(d.Payloads[1]) != "second" {
				t.Fatalf("two records: %q", d.Payloads)
			}
			for seq := uint64(250); seq < 262; seq++ {
				ss.mustOpen(&d, cl.record(ctApplicationData, []byte(fmt.Sprint(seq)), seq, false, true, cid), now)
				if string(d.Payloads[0]) != fmt.Sprint(seq) || !d.Newer {
					t.Fatalf("seq %d: %q newer %v", seq, d.Payloads, d.Newer)
				}
			}
			ss.mustOpen(&d, cl.record(ctApplicationData, []byte("300"), 300, false, true, cid), now)
			ss.mustOpen(&d, cl.record(ctApplicationData, []byte("290"), 290, false, true, cid), now)
			if string(d.Payloads[0]) != "290" || d.Newer {
				t.Fatalf("reordered 290: %q newer %v", d.Payloads, d.Newer)
			}
			if err := ss.conn.Open(&d, cl.record(ctApplicationData, []byte("again"), 290, false, true, cid), now); !errors.Is(err, ErrReplay) {
				t.Fatalf("290 again: %v", err)
			}
		})
	}
}

// TestPostHandshakeMessages: NewConnectionID and RequestConnectionID are
// acknowledged and ignored; retransmissions are acknowledged again; future
// and fragmented messages are not acknowledged; a KeyUpdate after them
// installs the next read epoch, and the previous epoch stays readable for
// reordered records until prevKeep.
func TestPostHandshakeMessages(t *testing.T) {
	s := setup{version: protocol.Version1_3, suite: ciphersuite.TLS_AES_128_GCM_SHA256, cid: cidBoth}
	ss := newSession(t, s)
	cl, sv := peers(t, ss, s)
	cid, peerCID := ss.conn.ConnectionID(), ss.conn.cidOut
	recv := ss.conn.recvSeq
	clk := newClock()
	var d Datagram
	seq := uint64(10)
	send := func(msg []byte) {
		t.Helper()
		seq++
		ss.mustOpen(&d, cl.record(ctHandshake, msg, seq, true, true, cid), clk.now())
	}
	mustACK := func(what string) {
		t.Helper()
		if len(d.Replies) != 1 {
			t.Fatalf("%s: %d replies, want one ACK", what, len(d.Replies))
		}
		typ, body, _ := sv.open(d.Replies[0], len(peerCID), ss.conn.write.seq-1)
		if got := parseACK(t, body); typ != ctACK || len(got) != 1 || got[0] != [2]uint64{cl.epoch, seq} {
			t.Fatalf("%s: reply type %d acknowledging %v, want (%d, %d)", what, typ, got, cl.epoch, seq)
		}
	}

	ncid := handshakeMsg(hsNewConnectionID, recv, []byte{0, 5, 4, 1, 2, 3, 4, 0})
	send(ncid)
	mustACK("NewConnectionID")
	send(handshakeMsg(hsRequestConnectionID, recv+1, []byte{3}))
	mustACK("RequestConnectionID")
	send(ncid)
	mustACK("retransmitted NewConnectionID")
	send(handshakeMsg(hsKeyUpdate, recv+5, []byte{0}))
	if len(d.Replies) != 0 {
		t.Fatal("a future message acknowledged")
	}
	frag := handshakeMsg(hsKeyUpdate, recv+2, []byte{0})
	frag[3] = 2 // length 2, fragment length 1
	send(frag)
	if len(d.Replies) != 0 {
		t.Fatal("a fragment acknowledged")
	}
	if err := ss.conn.Open(&d, cl.record(ctHandshake, handshakeMsg(4, recv+2, []byte{1, 2, 3}), 40, true, true, cid), clk.now()); !errors.Is(err, ErrMalformed) || len(d.Replies) != 0 {
		t.Fatalf("a client NewSessionTicket: %v, %d replies", err, len(d.Replies))
	}

	late := cl.record(ctApplicationData, []byte("late, epoch 3"), 50, true, true, cid)
	seq = 51
	send(handshakeMsg(hsKeyUpdate, recv+2, []byte{0}))
	mustACK("KeyUpdate")
	if st := ss.conn.Stats(); st.ReadEpoch != 4 || st.WriteEpoch != 3 {
		t.Fatalf("after the KeyUpdate: %+v", st)
	}
	cl.update()
	ss.mustOpen(&d, cl.record(ctApplicationData, []byte("epoch 4"), 0, true, true, cid), clk.now())
	if !d.Newer || string(d.Payloads[0]) != "epoch 4" {
		t.Fatalf("first record of epoch 4: %q newer %v", d.Payloads, d.Newer)
	}
	ss.mustOpen(&d, bytes.Clone(late), clk.now())
	if d.Newer || string(d.Payloads[0]) != "late, epoch 3" {
		t.Fatalf("reordered epoch-3 record: %q newer %v", d.Payloads, d.Newer)
	}
	clk.advance(prevKeep + time.Second)
	ss.conn.Poll(clk.now())
	old := cl.record(ctApplicationData, []byte("too late"), 0, true, true, cid)
	old[0] = old[0]&^3 | 3 // claim epoch 3 again
	if err := ss.conn.Open(&d, old, clk.now()); !errors.Is(err, ErrEpoch) {
		t.Fatalf("epoch 3 after prevKeep: %v", err)
	}
}
