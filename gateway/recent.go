package gateway

import (
	"hash/maphash"
	"net/netip"
	"time"
)

// What admission remembers about sources, in bounded memory, to tell the
// devices it should serve first under a flood of spoofed ClientHellos.

// recentAddrs holds the addresses that completed a handshake within ttl
// (Config.RecentHandshakeWindow): a device that reboots or re-handshakes
// from the same address gets priority (admission.go). A spoofer cannot add
// to it: only a completed, authenticated handshake does. Two generations of
// at most max/2 addresses each: when the current one fills up or grows
// older than ttl it becomes the previous one and the previous one is
// dropped, so memory is bounded and no address lingers long past ttl
// without a sweep. Not safe for concurrent use: admission's lock guards it.
type recentAddrs struct {
	ttl      time.Duration
	half     int
	cur, old map[netip.Addr]int64 // UnixNano of the last completed handshake
	curSince time.Time
}

func newRecentAddrs(ttl time.Duration, size int) *recentAddrs {
	return &recentAddrs{ttl: ttl, half: max(size/2, 1), cur: make(map[netip.Addr]int64), curSince: time.Now()}
}

// add records that ip completed a handshake at now.
func (r *recentAddrs) add(ip netip.Addr, now time.Time) {
	if len(r.cur) >= r.half || now.Sub(r.curSince) > r.ttl {
		r.old, r.cur, r.curSince = r.cur, make(map[netip.Addr]int64), now
	}
	r.cur[ip] = now.UnixNano()
}

// has reports whether ip completed a handshake within ttl before now.
func (r *recentAddrs) has(ip netip.Addr, now time.Time) bool {
	t, ok := r.cur[ip]
	if !ok {
		t, ok = r.old[ip]
	}
	return ok && now.UnixNano()-t <= int64(r.ttl)
}

// len is the number of addresses held (both generations; a test's view).
func (r *recentAddrs) len() int { return len(r.cur) + len(r.old) }

// shedHellos remembers ClientHellos shed under pressure — by source address
// and port and the hello's random, which a retransmission repeats — so
// that the retransmission is told apart from a hello never seen: a spoofer
// sends a hello once (or repeats it back to back), a real device sends it
// again after its retransmission timer (RFC 6347 §4.2.4: 1 s, doubling).
// A retransmission at least retryMinGap after the shed hello, within
// retryWindow, gets priority (admission.go).
//
// A fixed, direct-mapped table of hashed entries (constant memory whatever
// the flood rate): a newer shed hello may overwrite an older one in the
// same slot; the device then competes as a new hello again, which is what
// happens without the table. The table is allocated at the first shed hello
// and dropped when the pressure is over (relief.go). Not safe for
// concurrent use: admission's lock guards it.
type shedHellos struct {
	seed  maphash.Seed
	start time.Time
	slots []shedSlot
}

type shedSlot struct {
	tag uint32 // high half of the hash
	at  uint32 // milliseconds since start, plus one; 0: empty
}

const (
	// shedTableSize is the number of slots (8 bytes each, 4 MB, only while
	// under pressure): at 10,000 shed hellos a second a slot is
	// overwritten within one second with a probability of 2%, at 100,000
	// a second of 17%.
	shedTableSize = 1 << 19
	// retryMinGap is the shortest time after which a repeated hello counts
	// as a retransmission: repeats back to back are a flood's.
	retryMinGap = 200 * time.Millisecond
	// retryWindow is how long a shed hello is remembered.
	retryWindow = 30 * time.Second
)

func newShedHellos() *shedHellos {
	return &shedHellos{seed: maphash.MakeSeed(), start: time.Now()}
}

// forget drops the table (relief.go).
func (s *shedHellos) forget() { s.slots = nil }

// key hashes a hello's source and random.
func (s *shedHellos) key(from netip.AddrPort, random []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	a := from.Addr().As16()
	_, _ = h.Write(a[:])
	_, _ = h.Write([]byte{byte(from.Port() >> 8), byte(from.Port())})
	_, _ = h.Write(random)
	return h.Sum64()
}

func (s *shedHellos) stamp(now time.Time) uint32 {
	return uint32(now.Sub(s.start)/time.Millisecond) + 1
}

// remember records a shed hello, unless the same hello is already
// remembered: its first shedding is what a retransmission is timed from.
func (s *shedHellos) remember(k uint64, now time.Time) {
	if s.slots == nil {
		s.slots = make([]shedSlot, shedTableSize)
	}
	slot := &s.slots[k&(shedTableSize-1)]
	if slot.tag == uint32(k>>32) && slot.at != 0 && s.age(slot, now) <= retryWindow {
		return
	}
	*slot = shedSlot{tag: uint32(k >> 32), at: s.stamp(now)}
}

// isRetransmission reports whether a hello with key k was shed between
// retryWindow and retryMinGap before now.
func (s *shedHellos) isRetransmission(k uint64, now time.Time) bool {
	if s.slots == nil {
		return false
	}
	slot := &s.slots[k&(shedTableSize-1)]
	if slot.at == 0 || slot.tag != uint32(k>>32) {
		return false
	}
	age := s.age(slot, now)
	return age >= retryMinGap && age <= retryWindow
}

func (s *shedHellos) age(slot *shedSlot, now time.Time) time.Duration {
	return time.Duration(s.stamp(now)-slot.at) * time.Millisecond
}

// helloRandom returns the random of a datagram's first ClientHello
// fragment (parseHello validated the headers), or nil if it is too short.
func helloRandom(p []byte) []byte {
	off := recordHeaderLen + handshakeHeaderLen + 2
	if len(p) < off+32 {
		return nil
	}
	return p[off : off+32]
}

// helloMessageSeq is the message_seq of a datagram's ClientHello (RFC 6347
// §4.2.2): 0 for a first ClientHello, 1 for the one answering a cookie.
func helloMessageSeq(p []byte) uint16 {
	if len(p) < recordHeaderLen+6 {
		return 0
	}
	return uint16(p[recordHeaderLen+4])<<8 | uint16(p[recordHeaderLen+5])
}
