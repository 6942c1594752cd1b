package gateway

import (
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"time"
)

// bucketTable limits the rate of new handshakes per source — one address,
// or one prefix (an IPv4 /24, an IPv6 /64) — with a fixed number of token
// buckets, each source hashed to one of them under a per-process random
// seed.
//
// Hand-written rather than a map of golang.org/x/time/rate limiters: a
// spoofed flood brings a new source with every datagram, and a map would
// allocate a limiter per source and grow with the flood (the previous
// table started over at 65,536 entries). The table never allocates after
// New and its memory is constant. Two sources may share a bucket; with the
// seed secret an attacker cannot aim at a victim's bucket, and a flood
// spread over many sources adds a fraction of a handshake per second to
// each bucket, far below any useful limit.
type bucketTable struct {
	rate, burst float64 // tokens per second, bucket size
	seed        maphash.Seed
	start       time.Time

	mu      sync.Mutex
	buckets []bucket
}

// bucket is one token bucket; a bucket never used is full.
type bucket struct {
	tokens float64
	last   int64 // nanoseconds since table start; 0: never used
}

// bucketTableSize is the number of buckets of a table (16 bytes each).
const bucketTableSize = 1 << 14

// newBucketTable returns a table of rate per second with burst, or nil
// (no limit) when rate is infinite.
func newBucketTable(rate float64, burst int) *bucketTable {
	if math.IsInf(rate, 1) {
		return nil
	}
	return &bucketTable{rate: rate, burst: float64(max(burst, 1)), seed: maphash.MakeSeed(), start: time.Now(),
		buckets: make([]bucket, bucketTableSize)}
}

// allow takes one token from key's bucket at now; it reports false when the
// bucket is empty. A nil table allows everything.
func allow[K comparable](t *bucketTable, key K, now time.Time) bool {
	if t == nil {
		return true
	}
	i := maphash.Comparable(t.seed, key) & (bucketTableSize - 1)
	at := max(int64(now.Sub(t.start)), 1)
	t.mu.Lock()
	defer t.mu.Unlock()
	b := &t.buckets[i]
	if b.last == 0 {
		b.tokens = t.burst
	} else if at > b.last {
		b.tokens = min(t.burst, b.tokens+float64(at-b.last)*t.rate/1e9)
	}
	b.last = max(b.last, at)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sourcePrefix is the prefix of an address that per-prefix limits count:
// bits4 for IPv4, bits6 for IPv6 (IPv4-mapped addresses arrive unmapped).
func sourcePrefix(ip netip.Addr, bits4, bits6 int) netip.Prefix {
	bits := bits6
	if ip.Is4() {
		bits = bits4
	}
	p, err := ip.WithZone("").Prefix(bits)
	if err != nil {
		return netip.PrefixFrom(ip, ip.BitLen())
	}
	return p
}
