package record

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// benchSetups: every suite, CIDs as the gateway's devices use them.
func benchSetups() []setup {
	var out []setup
	for _, s := range allSetups() {
		if s.cid == cidServer && s.version == protocol.Version1_2 || s.cid == cidBoth && s.version == protocol.Version1_3 {
			out = append(out, s)
		}
	}
	return out
}

// mirror returns a Conn that plays the client of the same session: keys,
// CIDs and directions swapped. Benchmarks use it to make records to open.
func mirror(tb testing.TB, p Params) *Conn {
	c, err := New(p)
	if err != nil {
		tb.Fatal(err)
	}
	c.write, c.read = c.read, c.write
	c.write.seq, c.read.win = 1000, window{}
	c.cidIn, c.cidOut = c.cidOut, c.cidIn
	return c
}

// payload100 is the 100-byte CoAP request.
var payload100 = bytes.Repeat([]byte{0x42}, 100)

// BenchmarkOpen opens one 100-byte record per op, per suite; "raw" releases
// the instantiated ciphers before every op (keys held as bytes only),
// "instantiated" keeps them. The record is copied back and the replay window
// reset each op (Open decrypts in place and refuses replays).
func BenchmarkOpen(b *testing.B) {
	for _, s := range benchSetups() {
		p := sessionParams(b, s)
		for _, mode := range []string{"instantiated", "raw"} {
			b.Run(fmt.Sprintf("%s/%s", s.suite, mode), func(b *testing.B) {
				c, err := New(p)
				if err != nil {
					b.Fatal(err)
				}
				rec, err := mirror(b, p).Seal(nil, payload100)
				if err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, len(rec))
				var d Datagram
				now := time.Now()
				b.ReportAllocs()
				b.SetBytes(int64(len(payload100)))
				for b.Loop() {
					copy(buf, rec)
					c.read.win = window{}
					if mode == "raw" {
						c.Release()
					}
					if err := c.Open(&d, buf, now); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkSeal seals one 100-byte payload per op into a reused buffer.
func BenchmarkSeal(b *testing.B) {
	for _, s := range benchSetups() {
		p := sessionParams(b, s)
		for _, mode := range []string{"instantiated", "raw"} {
			b.Run(fmt.Sprintf("%s/%s", s.suite, mode), func(b *testing.B) {
				c, err := New(p)
				if err != nil {
					b.Fatal(err)
				}
				dst := make([]byte, 0, 256)
				b.ReportAllocs()
				b.SetBytes(int64(len(payload100)))
				for b.Loop() {
					if mode == "raw" {
						c.Release()
					}
					if c.write.seq > 1<<20 {
						c.write.seq = 0 // stay below every AEAD limit; nobody reads these
					}
					if _, err := c.Seal(dst[:0], payload100); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// sessionParams caches one pion handshake per setup for the benchmarks.
var sessionCache = map[string]Params{}

func sessionParams(b *testing.B, s setup) Params {
	if p, ok := sessionCache[s.String()]; ok {
		return p
	}
	ss, _ := s.handshake(b)
	sessionCache[s.String()] = ss.params
	return ss.params
}

// heapPerConn builds n Conns from p, brings them to the given state, and
// returns the live heap bytes per Conn after a GC.
func heapPerConn(tb testing.TB, p Params, n int, settle func(c *Conn)) float64 {
	conns := make([]*Conn, n)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range conns {
		c, err := New(p)
		if err != nil {
			tb.Fatal(err)
		}
		settle(c)
		conns[i] = c
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(conns)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// Conn states for the memory measurement.
var connStates = []struct {
	name   string
	settle func(c *Conn)
}{
	// fresh: as New returns it (1.3 holds handshake read keys, 1.2 the final flight).
	{"fresh", func(c *Conn) {}},
	// idle: late-handshake state expired, ciphers released: what a sleeping device costs.
	{"idle", func(c *Conn) { c.Poll(time.Now().Add(3 * time.Minute)); c.Release() }},
	// active: as idle, plus ciphers instantiated by a Seal and an Open.
	{"active", func(c *Conn) {
		c.Poll(time.Now().Add(3 * time.Minute))
		_, _ = c.Seal(make([]byte, 0, 256), payload100)
		_ = c.read.ready(c.s, false)
	}},
}

// BenchmarkHeapPerConn reports live heap bytes per Conn (10,000 Conns,
// after runtime.GC) per suite and state.
func BenchmarkHeapPerConn(b *testing.B) {
	for _, s := range benchSetups() {
		p := sessionParams(b, s)
		for _, st := range connStates {
			b.Run(fmt.Sprintf("%s/%s", s.suite, st.name), func(b *testing.B) {
				var per float64
				for b.Loop() {
					per = heapPerConn(b, p, 10000, st.settle)
				}
				b.ReportMetric(per, "B/conn")
			})
		}
	}
}

// TestIdleConnHeap: an idle session (late-handshake state expired, ciphers
// released) costs at most 2 KB of heap, the target, for every suite.
func TestIdleConnHeap(t *testing.T) {
	for _, s := range []setup{
		{version: protocol.Version1_2, suite: ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, cid: cidBoth},
		{version: protocol.Version1_2, suite: ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256, cid: cidBoth},
		{version: protocol.Version1_3, suite: ciphersuite.TLS_AES_256_GCM_SHA384, cid: cidBoth},
		{version: protocol.Version1_3, suite: ciphersuite.TLS_AES_128_GCM_SHA256, cid: cidBoth},
	} {
		ss, _ := s.handshake(t)
		per := heapPerConn(t, ss.params, 10000, connStates[1].settle)
		t.Logf("%s: %.0f B per idle Conn", s, per)
		if per > 2048 {
			t.Errorf("%s: %.0f B per idle Conn, target 2048", s, per)
		}
	}
}
