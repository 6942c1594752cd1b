package record

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

func setups13() []setup {
	var out []setup
	for _, id := range []ciphersuite.ID{ciphersuite.TLS_AES_128_GCM_SHA256, ciphersuite.TLS_AES_256_GCM_SHA384,
		ciphersuite.TLS_CHACHA20_POLY1305_SHA256} {
		for _, m := range []cidMode{cidNone, cidBoth} {
			out = append(out, setup{version: protocol.Version1_3, suite: id, cid: m})
		}
	}
	return out
}

func (ss *session) clientUpdateKeys(requestPeer bool) {
	ss.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := ss.client.UpdateKeys(ctx, dtls.KeyUpdateOptions{RequestPeerUpdate: requestPeer}); err != nil {
		ss.t.Fatalf("client UpdateKeys: %v", err)
	}
}

// TestPeerKeyUpdate (RFC 9147 §8): pion-initiated KeyUpdates, without and
// with update_requested, twice each; traffic flows both ways after each and
// the epochs move as the RFC says: our read epoch at once, our write epoch
// only when the client acknowledges our own KeyUpdate.
func TestPeerKeyUpdate(t *testing.T) {
	for _, s := range setups13() {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			ch := ss.startPump(nil)
			ss.roundTrip(ch, "before")
			read, write := uint64(3), uint64(3)
			for i, request := range []bool{false, true, false, true} {
				ss.clientUpdateKeys(request) // returns once we acknowledged it
				read++
				if request {
					await(t, ch, "our KeyUpdate acknowledged", func(o opened) bool { return o.keysChanged })
					write++
				}
				ss.roundTrip(ch, fmt.Sprint("after update ", i))
				st := ss.conn.Stats()
				if st.ReadEpoch != read || st.WriteEpoch != write || st.KeyUpdatePending {
					t.Fatalf("after update %d (request %v): %+v, want read %d write %d", i, request, st, read, write)
				}
			}
		})
	}
}

// TestOurKeyUpdate: UpdateKeys from the gateway; the first transmission is
// lost and Poll retransmits it; the write epoch changes only on the ACK.
func TestOurKeyUpdate(t *testing.T) {
	for _, s := range setups13() {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			ch := ss.startPump(nil)
			ss.roundTrip(ch, "before")
			ku, err := ss.conn.UpdateKeys()
			if err != nil || ku == nil {
				t.Fatalf("UpdateKeys: %v", err)
			}
			if again, err := ss.conn.UpdateKeys(); again != nil || err != nil {
				t.Fatalf("second UpdateKeys while one is pending: %x, %v", again, err)
			}
			// ku is lost. Records sealed meanwhile still use epoch 3.
			ss.roundTrip(ch, "pending")
			if st := ss.conn.Stats(); st.WriteEpoch != 3 || !st.KeyUpdatePending {
				t.Fatalf("before the ACK: %+v", st)
			}
			o := await(t, ch, "our retransmitted KeyUpdate acknowledged", func(o opened) bool { return o.keysChanged })
			if o.err != nil {
				t.Fatal(o.err)
			}
			ss.roundTrip(ch, "after")
			if st := ss.conn.Stats(); st.WriteEpoch != 4 || st.KeyUpdatePending {
				t.Fatalf("after the ACK: %+v", st)
			}
		})
	}
}

// TestSealStartsKeyUpdate: near the AEAD usage limit Seal starts a KeyUpdate
// by itself (RFC 9147 §4.5.3), and at the limit it refuses rather than wrap.
func TestSealStartsKeyUpdate(t *testing.T) {
	s := setup{version: protocol.Version1_3, suite: ciphersuite.TLS_AES_128_GCM_SHA256, cid: cidBoth}
	ss := newSession(t, s)
	m, err := decodePionState(ss.params.State)
	if err != nil {
		t.Fatal(err)
	}
	at := ss.conn.s.updateAt()
	m.DTLS13.Write[len(m.DTLS13.Write)-1].SequenceNumber = at - 1
	ss.reseal(m)
	// The client must have seen numbers near ours: 1.3 headers carry 16
	// bits and a receiver reconstructs within 2^15 of what it saw.
	cm := ss.exportClient()
	r := &cm.DTLS13.Read[len(cm.DTLS13.Read)-1]
	r.SequenceNumber, r.SequenceNumberSeen = at-2, true
	ss.resumeClient(s, cm)
	ch := ss.startPump(nil)
	ss.roundTrip(ch, "below the threshold") // seq at-1: no KeyUpdate
	if ss.conn.Stats().KeyUpdatePending {
		t.Fatal("KeyUpdate started below the threshold")
	}
	ss.roundTrip(ch, "at the threshold") // seq at: KeyUpdate prepended
	await(t, ch, "the automatic KeyUpdate acknowledged", func(o opened) bool { return o.keysChanged })
	ss.roundTrip(ch, "new epoch")
	if st := ss.conn.Stats(); st.WriteEpoch != 4 || ss.conn.NextWriteSeq() != 4<<48|1 {
		t.Fatalf("after the automatic KeyUpdate: %+v, next %#x", st, ss.conn.NextWriteSeq())
	}
}

// TestSealLimit: a write key at its limit whose KeyUpdate is never
// acknowledged refuses to seal (ErrLimit) instead of reusing the key past
// its limit; 1.2 likewise at its limit.
func TestSealLimit(t *testing.T) {
	for _, s := range []setup{
		{version: protocol.Version1_3, suite: ciphersuite.TLS_AES_128_GCM_SHA256},
		{version: protocol.Version1_2, suite: ciphersuite.TLS_PSK_WITH_AES_128_CCM_8},
		{version: protocol.Version1_2, suite: ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256},
	} {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			m, err := decodePionState(ss.params.State)
			if err != nil {
				t.Fatal(err)
			}
			limit := ss.conn.s.sealLimit
			if s.version == protocol.Version1_3 {
				// The last Seal below also carries the automatic KeyUpdate.
				m.DTLS13.Write[len(m.DTLS13.Write)-1].SequenceNumber = limit - 2
			} else {
				m.SequenceNumber = limit - 1
			}
			ss.reseal(m)
			if _, err := ss.conn.Seal(nil, []byte("last")); err != nil {
				t.Fatalf("seal below the limit: %v", err)
			}
			before := ss.conn.NextWriteSeq()
			if _, err := ss.conn.Seal(nil, []byte("one too many")); err != ErrLimit {
				t.Fatalf("seal at the limit: %v, want ErrLimit", err)
			}
			if ss.conn.NextWriteSeq() != before {
				t.Fatal("a refused Seal moved the sequence number")
			}
		})
	}
}

// TestNearWrap13: sequence numbers crossing the 8- and 16-bit boundaries
// of the unified header, both ways, with reordering.
func TestNearWrap13(t *testing.T) {
	for _, s := range setups13() {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			// The client writes from just below 2^16, we from just below 2^16
			// too (pion writes 16-bit sequence numbers; both reconstruct).
			cm := ss.exportClient()
			cm.DTLS13.Write[len(cm.DTLS13.Write)-1].SequenceNumber = 0xfffd
			ss.resumeClient(s, cm)
			m, err := decodePionState(ss.params.State)
			if err != nil {
				t.Fatal(err)
			}
			m.DTLS13.Write[len(m.DTLS13.Write)-1].SequenceNumber = 0xfffd
			ss.reseal(m)

			var recs [][]byte
			for i := range 6 {
				if _, err := ss.client.Write([]byte(fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
				recs = append(recs, ss.fromClient())
			}
			// Deliver 0xfffd..0x10002 out of order: 2,0,5,1,4,3.
			var d Datagram
			for _, i := range []int{2, 0, 5, 1, 4, 3} {
				if err := ss.conn.Open(&d, recs[i], time.Now()); err != nil || string(d.Payloads[0]) != fmt.Sprint(i) {
					t.Fatalf("record %d: %v %q", i, err, d.Payloads)
				}
			}
			for i := range 6 {
				msg := []byte(fmt.Sprint("down ", i))
				rec, err := ss.conn.Seal(nil, msg)
				if err != nil {
					t.Fatal(err)
				}
				ss.toClient(rec)
				if got := ss.clientRead(); string(got) != string(msg) {
					t.Fatalf("client read %q, want %q", got, msg)
				}
			}
			if got := ss.conn.NextWriteSeq(); got != 3<<48|0x10003 {
				t.Fatalf("next write %#x", got)
			}
		})
	}
}

// TestKeyUpdateReorder: a record the pion client sent in epoch 3 arrives
// after its KeyUpdate and its first epoch-4 record; it is still accepted
// (the previous read epoch is kept) and does not count as newer.
func TestKeyUpdateReorder(t *testing.T) {
	for _, s := range setups13() {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			if _, err := ss.client.Write([]byte("epoch 3")); err != nil {
				t.Fatal(err)
			}
			held := ss.fromClient()
			updated := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				defer cancel()
				updated <- ss.client.UpdateKeys(ctx, dtls.KeyUpdateOptions{})
			}()
			var d Datagram
			ss.mustOpen(&d, ss.fromClient(), time.Now()) // the KeyUpdate
			if len(d.Replies) != 1 || ss.conn.Stats().ReadEpoch != 4 {
				t.Fatalf("KeyUpdate: %d replies, %+v", len(d.Replies), ss.conn.Stats())
			}
			ss.toClient(d.Replies[0])
			if err := <-updated; err != nil {
				t.Fatal(err)
			}
			if _, err := ss.client.Write([]byte("epoch 4")); err != nil {
				t.Fatal(err)
			}
			ss.mustOpen(&d, ss.fromClient(), time.Now())
			if string(d.Payloads[0]) != "epoch 4" || !d.Newer {
				t.Fatalf("epoch 4: %q newer %v", d.Payloads, d.Newer)
			}
			ss.mustOpen(&d, held, time.Now())
			if string(d.Payloads[0]) != "epoch 3" || d.Newer {
				t.Fatalf("held epoch-3 record: %q newer %v", d.Payloads, d.Newer)
			}
		})
	}
}

// TestNextPollCoversLateHandshakeState: NextPoll names the moment the late
// handshake state (1.3 handshake keys, 1.2 final flight) is due to be
// dropped, so a caller that polls only at NextPoll still frees it; once
// dropped, nothing is pending.
func TestNextPollCoversLateHandshakeState(t *testing.T) {
	for _, s := range []setup{
		{version: protocol.Version1_3, suite: ciphersuite.TLS_AES_128_GCM_SHA256, cid: cidBoth},
		{version: protocol.Version1_2, suite: ciphersuite.TLS_PSK_WITH_AES_128_CCM_8},
	} {
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			start := ss.params.Now
			next := ss.conn.NextPoll()
			if next.IsZero() || next.Before(start.Add(hsKeep)) || next.After(start.Add(hsKeep+time.Second)) {
				t.Fatalf("NextPoll %v, want just after %v (late-handshake state kept %v)", next, start.Add(hsKeep), hsKeep)
			}
			ss.conn.Poll(next.Add(-2 * time.Nanosecond))
			if got := ss.conn.NextPoll(); !got.Equal(next) {
				t.Fatalf("polled early: NextPoll %v, want %v still", got, next)
			}
			ss.conn.Poll(next)
			if got := ss.conn.NextPoll(); !got.IsZero() {
				t.Fatalf("after the late-handshake state is dropped: NextPoll %v, want nothing pending", got)
			}
		})
	}
}
