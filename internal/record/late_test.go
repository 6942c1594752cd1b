package record

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// clock is a fake caller clock for Open and Poll.
type clock struct{ t time.Time }

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// TestLateFinalFlight12 (RFC 6347 §4.2.4): the server's CCS+Finished is
// lost, pion's server considers the handshake done and is exported; the
// client retransmits its final flight and only our reply of the captured
// flight lets its handshake complete. Only an authenticated Finished
// triggers the reply, at most once per 500 ms.
func TestLateFinalFlight12(t *testing.T) {
	for _, id := range []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256} {
		for _, cid := range []cidMode{cidNone, cidServer} {
			s := setup{version: protocol.Version1_2, suite: id, cid: cid, dropLast: true, clientFlight: 100 * time.Millisecond}
			t.Run(s.String(), func(t *testing.T) { testLateFinalFlight12(t, s) })
		}
	}
}

func testLateFinalFlight12(t *testing.T, s setup) {
	ss, clientDone := s.handshake(t)
	select {
	case err := <-clientDone:
		t.Fatalf("client handshake ended without the server's final flight: %v", err)
	default:
	}
	c, err := New(ss.params)
	if err != nil {
		t.Fatal(err)
	}
	ss.conn = c
	clk := newClock()
	var d Datagram

	// The client's retransmitted final flight: an authenticated Finished.
	// The first reply is lost too.
	trigger := ss.nextAuthenticated(&d, clk)
	if !flightsEqual(d.Replies, ss.params.FinalFlight) {
		t.Fatalf("reply %x, want the captured final flight %x", d.Replies, ss.params.FinalFlight)
	}

	// No amplification: a replayed or forged trigger gets nothing.
	clk.advance(time.Second)
	if err := c.Open(&d, bytes.Clone(trigger), clk.now()); len(d.Replies) != 0 {
		t.Fatalf("replayed trigger answered (err %v)", err)
	}
	forged := bytes.Clone(trigger)
	forged[len(forged)-1] ^= 1
	if err := c.Open(&d, forged, clk.now()); len(d.Replies) != 0 || d.Authenticated {
		t.Fatalf("forged trigger answered or authenticated (err %v)", err)
	}

	// The next retransmission gets the flight, which now arrives.
	ss.nextAuthenticated(&d, clk)
	if len(d.Replies) == 0 {
		t.Fatal("no reply to a retransmitted final flight")
	}
	for _, r := range d.Replies {
		ss.toClient(r)
	}
	select {
	case err := <-clientDone:
		if err != nil {
			t.Fatalf("client handshake: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("client handshake did not complete after our reply")
	}
	if _, err := ss.client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got := ss.openApp(); len(got) != 1 || string(got[0]) != "hello" {
		t.Fatalf("opened %q", got)
	}
	if c.flight != nil {
		t.Fatal("final flight kept after the client's first application data")
	}
}

// nextAuthenticated opens client datagrams (one fake second apart) until one
// authenticates, and returns a copy of it as received.
func (ss *session) nextAuthenticated(d *Datagram, clk *clock) []byte {
	ss.t.Helper()
	for {
		b := ss.fromClient()
		raw := bytes.Clone(b)
		clk.advance(time.Second)
		err := ss.conn.Open(d, b, clk.now())
		if d.Authenticated {
			return raw
		}
		if !errors.Is(err, ErrEpoch) && !errors.Is(err, ErrReplay) {
			ss.t.Fatalf("open: %v", err)
		}
	}
}

func flightsEqual(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestFinalFlightPaced: two authenticated triggers within 500 ms of caller
// time get one reply.
func TestFinalFlightPaced(t *testing.T) {
	s := setup{version: protocol.Version1_2, suite: ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, dropLast: true, clientFlight: 100 * time.Millisecond}
	ss, _ := s.handshake(t)
	c, err := New(ss.params)
	if err != nil {
		t.Fatal(err)
	}
	ss.conn = c
	clk := newClock()
	var d Datagram
	ss.nextAuthenticated(&d, clk)
	if len(d.Replies) == 0 {
		t.Fatal("first trigger not answered")
	}
	for {
		b := ss.fromClient()
		clk.advance(100 * time.Millisecond)
		_ = c.Open(&d, b, clk.now())
		if d.Authenticated {
			break
		}
	}
	if len(d.Replies) != 0 {
		t.Fatal("second trigger within 500 ms answered")
	}
}

// TestLateFinished13 (RFC 9147 §7): the server's ACK of the client's
// Finished is lost and the server exported; the client retransmits its
// Finished in epoch 2; our ACK (in the application epoch) stops it.
func TestLateFinished13(t *testing.T) {
	for _, id := range []ciphersuite.ID{ciphersuite.TLS_AES_128_GCM_SHA256, ciphersuite.TLS_CHACHA20_POLY1305_SHA256} {
		s := setup{version: protocol.Version1_3, suite: id, cid: cidBoth, dropLast: true, clientFlight: 100 * time.Millisecond}
		t.Run(s.String(), func(t *testing.T) { testLateFinished13(t, s) })
	}
}

func testLateFinished13(t *testing.T, s setup) {
	ss, clientDone := s.handshake(t)
	if err := <-clientDone; err != nil {
		t.Fatalf("client handshake: %v", err) // a 1.3 client is done once its Finished is sent
	}
	ss.pipe.setDrop(nil)
	c, err := New(ss.params)
	if err != nil {
		t.Fatal(err)
	}
	ss.conn = c
	clk := newClock()
	var d Datagram

	// Control: without an ACK the client keeps retransmitting. Our first
	// ACK is lost as well.
	for range 2 {
		ss.nextAuthenticated(&d, clk)
		if len(d.Replies) != 1 || d.Newer {
			t.Fatalf("replies %d, newer %v: want one ACK, not newer", len(d.Replies), d.Newer)
		}
	}
	ack := d.Replies[0]
	if ack[0]&3 != 3 {
		t.Fatalf("ACK sent in epoch bits %d, want the application epoch", ack[0]&3)
	}

	// Deliver this ACK. Then let the client start a KeyUpdate and drop its
	// first three transmissions: the client's own retransmission timer
	// measures out three intervals, during which a still-pending Finished
	// would have been retransmitted (same interval, started earlier).
	var finishedAfter, kuSeen atomic.Int32
	ss.pipe.setDrop(func(fromServer bool, b []byte) bool {
		if fromServer || b[0]&unifiedMask != unifiedFixed {
			return false
		}
		switch b[0] & 3 {
		case 2:
			finishedAfter.Add(1)
		case 3:
			return kuSeen.Add(1) <= 3
		}
		return false
	})
	ss.toClient(ack)
	updated := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		updated <- ss.client.UpdateKeys(ctx, dtls.KeyUpdateOptions{})
	}()
	for {
		b := ss.fromClient()
		clk.advance(time.Second)
		if err := c.Open(&d, b, clk.now()); err != nil {
			t.Fatalf("open: %v", err)
		}
		for _, r := range d.Replies {
			ss.toClient(r)
		}
		if d.Authenticated && len(d.Payloads) == 0 && len(d.Replies) == 1 {
			break // the KeyUpdate, acknowledged
		}
	}
	if n := finishedAfter.Load(); n != 0 {
		t.Fatalf("client retransmitted its Finished %d times after our ACK", n)
	}
	if err := <-updated; err != nil {
		t.Fatalf("client UpdateKeys: %v", err)
	}
	if c.Stats().ReadEpoch != 4 {
		t.Fatalf("read epoch %d after the client's KeyUpdate, want 4", c.Stats().ReadEpoch)
	}
}
