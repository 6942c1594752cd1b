package record

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// gatewayModel drives a Conn the way the gateway is told to (doc.go): it
// persists a snapshot and reserves a block of write sequence numbers before
// sealing past the last reservation, persists again when the write keys
// change, and after a crash restores the last snapshot and calls
// ReserveWriteSeq with the reservation's end.
type gatewayModel struct {
	t        *testing.T
	ss       *session
	snap     []byte
	reserved uint64 // end of the persisted reservation, epoch<<48|seq
	block    uint64
	used     map[uint64]bool // every record number sealed, epoch<<48|seq
	clk      *clock
	crashes  int
}

func (g *gatewayModel) persist() {
	g.snap = snapshot(g.t, g.ss.conn)
	g.reserved = g.ss.conn.NextWriteSeq() + g.block
}

func (g *gatewayModel) crash() {
	c := new(Conn)
	if err := c.UnmarshalBinary(g.snap); err != nil {
		g.t.Fatalf("restore: %v", err)
	}
	if err := c.ReserveWriteSeq(g.reserved); err != nil {
		g.t.Fatalf("ReserveWriteSeq: %v", err)
	}
	g.ss.conn = c
	g.crashes++
}

// emit runs one operation that may produce records and checks that they
// used fresh record numbers: exactly those from NextWriteSeq before to after.
func (g *gatewayModel) emit(op func() [][]byte) [][]byte {
	g.t.Helper()
	if g.ss.conn.NextWriteSeq() >= g.reserved {
		g.persist()
	}
	before := g.ss.conn.NextWriteSeq()
	out := op()
	after := g.ss.conn.NextWriteSeq()
	n := 0
	for _, d := range out {
		n += countRecords(g.ss.conn.s.tls13, d)
	}
	if after>>48 != before>>48 {
		// The write keys changed (our KeyUpdate was acknowledged): the new
		// epoch starts at 0 and nothing was sealed in this operation.
		if n != 0 || after&maxSeq != 0 || after>>48 != before>>48+1 {
			g.t.Fatalf("epoch change %#x → %#x with %d records", before, after, n)
		}
		return out
	}
	if uint64(n) != after-before {
		g.t.Fatalf("%d records emitted, sequence moved %#x → %#x", n, before, after)
	}
	for r := before; r < after; r++ {
		if g.used[r] {
			g.t.Fatalf("record number %#x used twice", r)
		}
		g.used[r] = true
	}
	if after > g.reserved {
		g.t.Fatalf("sealed past the reservation: %#x > %#x", after, g.reserved)
	}
	return out
}

// countRecords counts the records of a datagram we wrote (1.3: L bit set).
func countRecords(tls13 bool, d []byte) int {
	n := 0
	for len(d) > 0 {
		var l int
		if tls13 {
			h := 1 + 2 + 2
			if d[0]&bitC != 0 {
				h += 5 // the client's CID in the property setups
			}
			l = h + int(binary.BigEndian.Uint16(d[h-2:]))
		} else {
			h := recordHeader12
			if d[0] == ctCID {
				h += 5
			}
			l = h + int(binary.BigEndian.Uint16(d[h-2:]))
		}
		d = d[l:]
		n++
	}
	return n
}

// TestWriteSeqNeverRepeats is a property test: under random Seal,
// UpdateKeys (with lost KeyUpdates), Poll retransmissions, snapshots and
// crash/restore with ReserveWriteSeq, no record number is sealed twice under
// one key; and the pion client accepts every application record (pion drops
// a record whose number it saw before).
func TestWriteSeqNeverRepeats(t *testing.T) {
	for _, s := range []setup{
		{version: protocol.Version1_3, suite: ciphersuite.TLS_AES_128_GCM_SHA256, cid: cidBoth},
		{version: protocol.Version1_3, suite: ciphersuite.TLS_CHACHA20_POLY1305_SHA256, cid: cidNone},
		{version: protocol.Version1_2, suite: ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, cid: cidBoth},
	} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("%s/seed%d", s, seed), func(t *testing.T) {
				ss := newSession(t, s)
				g := &gatewayModel{t: t, ss: ss, block: 16, used: map[uint64]bool{}, clk: newClock()}
				g.persist()
				rng := rand.New(rand.NewPCG(seed, 0x5eed))
				tls13 := s.version == protocol.Version1_3
				for i := range 400 {
					switch x := rng.IntN(100); {
					case x < 60:
						msg := []byte(fmt.Sprint("op ", i))
						out := g.emit(func() [][]byte {
							rec, err := ss.conn.Seal(nil, msg)
							if err != nil {
								t.Fatalf("seal: %v", err)
							}
							return [][]byte{rec}
						})
						ss.toClient(out[0])
						if got := ss.clientRead(); !bytes.Equal(got, msg) {
							t.Fatalf("client read %q, want %q", got, msg)
						}
					case x < 72 && tls13:
						out := g.emit(func() [][]byte {
							ku, err := ss.conn.UpdateKeys()
							if err != nil {
								t.Fatalf("UpdateKeys: %v", err)
							}
							if ku == nil {
								return nil
							}
							return [][]byte{ku}
						})
						if len(out) == 1 && rng.IntN(3) > 0 {
							g.deliverAndAck(out[0])
						}
					case x < 84 && tls13:
						g.clk.advance(61 * time.Second)
						out := g.emit(func() [][]byte { return ss.conn.Poll(g.clk.now()) })
						for _, d := range out {
							g.deliverAndAck(d)
						}
					case x < 92:
						g.persist()
					default:
						g.crash()
					}
				}
				if len(g.used) < 200 || g.crashes < 10 {
					t.Fatalf("only %d records sealed, %d crashes", len(g.used), g.crashes)
				}
				if tls13 && ss.conn.Stats().WriteEpoch < 6 {
					t.Fatalf("write epoch %d: too few KeyUpdates exercised", ss.conn.Stats().WriteEpoch)
				}
			})
		}
	}
}

// deliverAndAck delivers our KeyUpdate to the client and opens its ACK.
func (g *gatewayModel) deliverAndAck(ku []byte) {
	g.t.Helper()
	g.ss.toClient(ku)
	var d Datagram
	b := g.ss.fromClient()
	out := g.emit(func() [][]byte {
		if err := g.ss.conn.Open(&d, b, g.clk.now()); err != nil {
			g.t.Fatalf("open the client's ACK: %v", err)
		}
		return d.Replies
	})
	for _, r := range out {
		g.ss.toClient(r)
	}
	if d.KeysChanged {
		g.persist()
	}
}
