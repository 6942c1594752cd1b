package gateway

import (
	"net/netip"
	"testing"
	"time"
)

// newTestAdmission returns a server's admission (no socket is opened) and a
// function that builds handshakes for it from distinct addresses.
func newTestAdmission(t *testing.T, cfg Config) (*Server, func(ap netip.AddrPort) func() *handshake) {
	t.Helper()
	cfg.Store = newMapStore()
	cfg.Backends = map[string]string{"dm": "127.0.0.1:9"}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{srv: srv}
	return srv, func(ap netip.AddrPort) func() *handshake {
		return func() *handshake { return srv.newHandshake(l, ap, hello{}) }
	}
}

func addr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 9, byte(i >> 8), byte(i)}), 40000)
}

// TestAdmissionCapsEmbryonicPerClass: the new class holds at most its
// share of MaxEmbryonic; past it the oldest is evicted; a handshake whose
// cookie was answered is not evicted while the grace lasts; the pool never
// exceeds MaxHandshakes, and the priority classes keep their share of it.
func TestAdmissionCapsEmbryonicPerClass(t *testing.T) {
	srv, build := newTestAdmission(t, Config{MaxEmbryonic: 16, MaxHandshakes: 32, NewHandshakeRate: -1})
	a := srv.admission
	newMax := a.queues[classNew].max // 16 - 2×4
	if newMax != 8 || a.queues[classRetry].max != 4 || a.queues[classReturning].max != 4 {
		t.Fatalf("class caps %d/%d/%d, want 8/4/4", newMax, a.queues[classRetry].max, a.queues[classReturning].max)
	}
	now := time.Now()
	var admitted []*handshake
	for i := range newMax {
		hs, _, ok := a.admit(classNew, 0, now, build(addr(i)))
		if !ok {
			t.Fatalf("hello %d shed below the cap", i)
		}
		admitted = append(admitted, hs)
	}
	if _, _, ok := a.admit(classNew, 0, now, build(addr(99))); ok {
		t.Fatal("hello past the cap admitted although every handshake is younger than evictAfterNew")
	}
	now = now.Add(evictAfterNew)
	admitted[0].noteAnswer(now) // the oldest answered its cookie: shielded
	hs, _, ok := a.admit(classNew, 0, now, build(addr(100)))
	if !ok {
		t.Fatal("hello past the cap was shed: want the oldest unshielded evicted")
	}
	if admitted[0].phase.Load() != phaseEmbryonic {
		t.Fatal("the shielded handshake was evicted")
	}
	if admitted[1].phase.Load() != phaseDone || !admitted[1].evicted {
		t.Fatal("the oldest unshielded handshake was not evicted")
	}
	if got := a.embryos(); got != newMax {
		t.Fatalf("%d embryonic, want the cap %d", got, newMax)
	}
	// After the grace the shielded one is the oldest again.
	later := now.Add(answerGrace)
	if _, _, ok := a.admit(classNew, 0, later, build(addr(101))); !ok || admitted[0].phase.Load() != phaseDone {
		t.Fatal("after the grace, the answered but unverified handshake should be evicted first")
	}
	// Verified handshakes leave the embryonic count.
	hs.phase.Store(phaseVerified)
	a.verified(hs)
	if got := a.embryos(); got != newMax-1 {
		t.Fatalf("%d embryonic after one was verified, want %d", got, newMax-1)
	}
	if a.inPoolNew > a.maxHandshakes-a.reserved || a.inPool > a.maxHandshakes {
		t.Fatalf("pool %d (new %d) over MaxHandshakes %d", a.inPool, a.inPoolNew, a.maxHandshakes)
	}
}

// TestAdmissionPoolReserve: new hellos cannot take the last quarter of the
// pool; returning devices can. Releasing a slot makes room again.
func TestAdmissionPoolReserve(t *testing.T) {
	srv, build := newTestAdmission(t, Config{MaxEmbryonic: 1000, MaxHandshakes: 8, NewHandshakeRate: -1})
	a := srv.admission
	now := time.Now()
	var releases []func()
	for i := range 6 { // 8 - 8/4
		_, release, ok := a.admit(classNew, 0, now, build(addr(i)))
		if !ok {
			t.Fatalf("new hello %d shed with the pool not full", i)
		}
		releases = append(releases, release)
	}
	if _, _, ok := a.admit(classNew, 0, now, build(addr(6))); ok {
		t.Fatal("a new hello took a reserved slot")
	}
	for i := range 2 {
		if _, _, ok := a.admit(classReturning, 0, now, build(addr(10+i))); !ok {
			t.Fatalf("returning hello %d shed: the reserve is theirs", i)
		}
	}
	if _, _, ok := a.admit(classReturning, 0, now, build(addr(20))); ok {
		t.Fatal("the pool holds more than MaxHandshakes")
	}
	releases[0]()
	releases[0]() // idempotent
	if _, _, ok := a.admit(classNew, 0, now, build(addr(7))); !ok {
		t.Fatal("a released slot was not reused")
	}
	if a.inPool != 8 {
		t.Fatalf("pool %d, want 8", a.inPool)
	}
}

// TestAdmissionRateSheds: each class has its own bucket; new hellos shed by
// an empty bucket do not take the returning devices' bucket.
func TestAdmissionRateSheds(t *testing.T) {
	srv, build := newTestAdmission(t, Config{MaxEmbryonic: 1 << 12, MaxHandshakes: 1 << 12, NewHandshakeRate: 10})
	a := srv.admission
	now := time.Now()
	admitted := 0
	for i := range 100 {
		if _, _, ok := a.admit(classNew, 0, now, build(addr(i))); ok {
			admitted++
		}
	}
	if admitted != 10 { // burst: one second's worth
		t.Fatalf("%d of 100 new hellos admitted at once, want the burst of 10", admitted)
	}
	if _, _, ok := a.admit(classReturning, 0, now, build(addr(500))); !ok {
		t.Fatal("a returning hello was shed because new ones used up their bucket")
	}
	if _, _, ok := a.admit(classNew, 0, now.Add(200*time.Millisecond), build(addr(501))); !ok {
		t.Fatal("the new-hello bucket did not refill")
	}
}

// TestAdmissionClassifies: an address that completed a handshake is
// returning; a hello shed under pressure and sent again after a
// retransmission interval is a retry; the same hello repeated back to back,
// or another hello, is new.
func TestAdmissionClassifies(t *testing.T) {
	srv, _ := newTestAdmission(t, Config{})
	a := srv.admission
	now := time.Now()
	hello1 := make([]byte, recordHeaderLen+handshakeHeaderLen+2+32)
	hello1[recordHeaderLen+handshakeHeaderLen+2] = 1
	hello2 := make([]byte, len(hello1))
	hello2[recordHeaderLen+handshakeHeaderLen+2] = 2
	from := addr(1)

	a.remember(addr(2).Addr())
	if c, _ := a.classify(netip.AddrPortFrom(addr(2).Addr(), 1234), hello1, now); c != classReturning {
		t.Fatalf("address with a completed handshake: class %v, want returning", c)
	}
	c, key := a.classify(from, hello1, now)
	if c != classNew || key == 0 {
		t.Fatalf("first hello: class %v key %x, want new with a key", c, key)
	}
	a.mu.Lock()
	a.shed.remember(key, now)
	a.mu.Unlock()
	if c, _ := a.classify(from, hello1, now.Add(time.Millisecond)); c != classNew {
		t.Fatalf("back-to-back repeat: class %v, want new", c)
	}
	if c, _ := a.classify(from, hello2, now.Add(time.Second)); c != classNew {
		t.Fatalf("another hello from the same source: class %v, want new", c)
	}
	if c, _ := a.classify(netip.AddrPortFrom(from.Addr(), 1), hello1, now.Add(time.Second)); c != classNew {
		t.Fatalf("the same hello from another port: class %v, want new", c)
	}
	if c, _ := a.classify(from, hello1, now.Add(time.Second)); c != classRetry {
		t.Fatalf("retransmission after 1s: class %v, want retry", c)
	}
	if c, _ := a.classify(from, hello1, now.Add(retryWindow+time.Second)); c != classNew {
		t.Fatalf("repeat after the window: class %v, want new", c)
	}
}

// TestAdmissionShedRemembersNewHellos: a new hello shed by admit is
// remembered, so its retransmission is a retry.
func TestAdmissionShedRemembersNewHellos(t *testing.T) {
	srv, build := newTestAdmission(t, Config{MaxHandshakes: 4, NewHandshakeRate: -1})
	a := srv.admission
	now := time.Now()
	for i := range 3 {
		if _, _, ok := a.admit(classNew, 0, now, build(addr(i))); !ok {
			t.Fatal("shed below the pool's new share")
		}
	}
	p := make([]byte, recordHeaderLen+handshakeHeaderLen+2+32)
	p[len(p)-1] = 7
	c, key := a.classify(addr(50), p, now)
	if _, _, ok := a.admit(c, key, now, build(addr(50))); ok {
		t.Fatal("admitted past the pool's new share")
	}
	if c, _ := a.classify(addr(50), p, now.Add(time.Second)); c != classRetry {
		t.Fatalf("retransmission of a shed hello: class %v, want retry", c)
	}
	if _, _, ok := a.admit(classRetry, key, now.Add(time.Second), build(addr(50))); !ok {
		t.Fatal("the retransmission was shed: the reserve is for it")
	}
}

// TestRecentAddrsBounded: the recent-address cache keeps at most its size
// and forgets addresses past the window.
func TestRecentAddrsBounded(t *testing.T) {
	r := newRecentAddrs(time.Hour, 100)
	now := time.Now()
	for i := range 1000 {
		r.add(addr(i).Addr(), now)
		if r.len() > 100 {
			t.Fatalf("%d addresses held, bound 100", r.len())
		}
	}
	if !r.has(addr(999).Addr(), now) {
		t.Fatal("the newest address was forgotten")
	}
	if r.has(addr(0).Addr(), now) {
		t.Fatal("the oldest address survived 20 generations")
	}
	if r.has(addr(999).Addr(), now.Add(time.Hour+time.Second)) {
		t.Fatal("an address is still recent past the window")
	}
	r.add(addr(1).Addr(), now.Add(3*time.Hour))
	if r.has(addr(999).Addr(), now.Add(3*time.Hour)) {
		t.Fatal("an old generation survived past the window")
	}
}

// TestBucketTable: a source gets its burst, then its rate; another source
// is not affected; a nil table (unlimited) allows everything.
func TestBucketTable(t *testing.T) {
	bt := newBucketTable(10, 5)
	now := time.Now()
	a, b := addr(1).Addr(), addr(2).Addr()
	for i := range 5 {
		if !allow(bt, a, now) {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	if allow(bt, a, now) {
		t.Fatal("request past the burst allowed")
	}
	if !allow(bt, b, now) {
		t.Fatal("another source was limited (a hash collision is 1 in 16384: rerun)")
	}
	if !allow(bt, a, now.Add(100*time.Millisecond)) {
		t.Fatal("the bucket did not refill at 10/s")
	}
	if allow(bt, a, now.Add(100*time.Millisecond)) {
		t.Fatal("the bucket refilled more than one token in 100ms")
	}
	var none *bucketTable
	if !allow(none, a, now) {
		t.Fatal("an unlimited table refused")
	}
}

// TestSourcePrefix: per-prefix limits count IPv4 /24 and IPv6 /64 by
// default, and the configured lengths otherwise.
func TestSourcePrefix(t *testing.T) {
	for _, tc := range []struct {
		ip           string
		bits4, bits6 int
		want         string
	}{
		{"192.0.2.77", 24, 64, "192.0.2.0/24"},
		{"2001:db8:1:2:3:4:5:6", 24, 64, "2001:db8:1:2::/64"},
		{"192.0.2.77", 16, 48, "192.0.0.0/16"},
		{"2001:db8:1:2:3:4:5:6", 16, 48, "2001:db8:1::/48"},
	} {
		if got := sourcePrefix(netip.MustParseAddr(tc.ip), tc.bits4, tc.bits6); got.String() != tc.want {
			t.Errorf("sourcePrefix(%s, %d, %d) = %s, want %s", tc.ip, tc.bits4, tc.bits6, got, tc.want)
		}
	}
}

// TestPrefixRateLimit: hellos from many addresses of one /24 are limited
// together, while another /24 is not.
func TestPrefixRateLimit(t *testing.T) {
	srv, _ := newTestAdmission(t, Config{HandshakeRate: -1, PrefixHandshakeRate: 10, PrefixHandshakeBurst: 10})
	a := srv.admission
	now := time.Now()
	for i := range 10 {
		if _, ok := a.allowSource(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), now); !ok {
			t.Fatalf("address %d of the prefix refused within the burst", i)
		}
	}
	reason, ok := a.allowSource(netip.AddrFrom4([4]byte{198, 51, 100, 200}), now)
	if ok || reason != dropPrefixLimited {
		t.Fatalf("11th address of one /24: ok=%v reason=%v, want prefix_rate_limited", ok, reason)
	}
	if _, ok := a.allowSource(netip.AddrFrom4([4]byte{198, 51, 101, 1}), now); !ok {
		t.Fatal("another /24 was limited")
	}
}

// TestAdmissionConfigRanges: bad prefix lengths are refused with a clear
// error; zero values get the documented defaults.
func TestAdmissionConfigRanges(t *testing.T) {
	for _, cfg := range []Config{{PrefixLengthIPv4: 33}, {PrefixLengthIPv6: 129}, {PrefixLengthIPv4: -1}, {MaxRecentAddresses: -1}} {
		cfg.Store = newMapStore()
		cfg.Backends = map[string]string{"dm": "127.0.0.1:9"}
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted a bad admission limit", cfg)
		}
	}
	cfg := Config{Store: newMapStore(), Backends: map[string]string{"dm": "127.0.0.1:9"}}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if cfg.PrefixHandshakeRate != 500 || cfg.PrefixHandshakeBurst != 1000 || cfg.PrefixLengthIPv4 != 24 || cfg.PrefixLengthIPv6 != 64 ||
		cfg.NewHandshakeRate != 1000 || cfg.RecentHandshakeWindow != 24*time.Hour || cfg.MaxRecentAddresses != 1<<16 {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// used is the number of buckets a table has charged (a test's view).
func (t *bucketTable) used() int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, b := range t.buckets {
		if b.last != 0 {
			n++
		}
	}
	return n
}

// TestAdmissionPriorityEvictsLate: a full queue of returning devices'
// handshakes sheds a new returning hello until its oldest had
// evictAfterPriority to answer, then evicts it.
func TestAdmissionPriorityEvictsLate(t *testing.T) {
	srv, build := newTestAdmission(t, Config{MaxEmbryonic: 16, MaxHandshakes: 64, NewHandshakeRate: -1})
	a := srv.admission
	now := time.Now()
	var first *handshake
	for i := range a.queues[classReturning].max {
		hs, _, ok := a.admit(classReturning, 0, now, build(addr(i)))
		if !ok {
			t.Fatalf("returning hello %d shed below the cap", i)
		}
		if first == nil {
			first = hs
		}
	}
	if _, _, ok := a.admit(classReturning, 0, now.Add(evictAfterPriority-time.Millisecond), build(addr(50))); ok {
		t.Fatal("a returning device's handshake was evicted before it had evictAfterPriority to answer")
	}
	if _, _, ok := a.admit(classReturning, 0, now.Add(evictAfterPriority), build(addr(51))); !ok || first.phase.Load() != phaseDone {
		t.Fatal("the oldest returning handshake was not evicted after evictAfterPriority")
	}
}
