package gateway

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// The flood test is functional (issue 12): it checks that the caps hold and
// nothing leaks, not how fast anything is; the timing goals are in the
// benchmark scenario of bench/ (make bench, BENCHMARKS.md).

// spoofer routes spoofed ClientHellos as the listener's read loop would, each
// from a source address no device has (127.200.0.0 and up), so no socket
// and no raw packet is needed: the gateway's cookies go to addresses
// nobody listens on, as a spoofed flood's do.
type spoofer struct {
	l         *listener
	templates [][]byte
	n         uint32
	rng       *rand.Rand
}

// send routes one new hello, times times from the same source, and returns
// that source.
func (s *spoofer) send(times int) netip.AddrPort {
	s.n++
	from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 200 + byte(s.n>>24)%50, byte(s.n >> 16), byte(s.n >> 8)}), 1024+uint16(s.n))
	p := append([]byte(nil), s.templates[s.n%uint32(len(s.templates))]...)
	binary.LittleEndian.PutUint64(helloRandom(p), s.rng.Uint64()) // a hello of its own
	for range times {
		s.l.route(p, from)
	}
	return from
}

// TestClientHelloFloodCapsHold: spoofed ClientHellos of DTLS 1.3 and 1.2,
// sent once or twice each, are routed as fast as the test can while a real
// device handshakes, registers and reboots. At every step the embryonic
// handshakes stay within MaxEmbryonic and the pool within MaxHandshakes,
// whatever number of datagrams each spoofed handshake saw; goroutines stay
// bounded by the pool, not by the flood. The device gets in (a new address,
// then a returning one). After the flood every handshake ends, the pool
// empties, the goroutines are back, and the memory is handed back once
// (relief). A hello answering a cookie no handshake waits for builds
// nothing.
func TestClientHelloFloodCapsHold(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	k := testKey("legit", 1)
	k.Endpoint = "urn:dev:legit"
	const maxEmbryonic, maxHandshakes = 64, 96
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.Addr().String()},
		MaxEmbryonic: maxEmbryonic, MaxHandshakes: maxHandshakes, NewHandshakeRate: 200,
		HandshakeRate: -1, PrefixHandshakeRate: -1, // the flood comes from everywhere: the global caps must hold alone
		HandshakeTimeout: 3 * time.Second})
	a := srv.admission
	var freed atomic.Int32
	a.mu.Lock() // nothing is shed yet; the lock orders these writes before the flood
	a.relief.quiet, a.relief.period = 500*time.Millisecond, 200*time.Millisecond
	a.relief.free = func() { freed.Add(1) }
	a.mu.Unlock()
	sp := &spoofer{l: srv.listeners[0], rng: rand.New(rand.NewPCG(1, 2))}
	for _, v := range []protocol.Version{protocol.Version1_3, protocol.Version1_2} {
		sp.templates = append(sp.templates, captureClientHello(t, client{id: []byte("spoofed"), key: k.Secret, version: v}))
	}
	g0 := runtime.NumGoroutine()

	var peakEmbryos, peakPool, peakGoroutines, sent int
	check := func() {
		a.mu.Lock()
		emb, pool := a.nEmbryo, a.inPool
		a.mu.Unlock()
		if emb > maxEmbryonic || pool > maxHandshakes {
			t.Fatalf("after %d hellos: %d embryonic (cap %d), %d in the pool (cap %d)", sent, emb, maxEmbryonic, pool, maxHandshakes)
		}
		peakEmbryos, peakPool = max(peakEmbryos, emb), max(peakPool, pool)
	}
	flood := func() {
		sp.send(1 + sent%2) // once, then twice back to back
		sent++
		check()
		if sent%16 == 0 {
			// At most some 16,000 hellos a second: a flood a read loop
			// could take from a socket, whose shed hellos the gateway
			// remembers long enough to serve the device's retransmission.
			time.Sleep(time.Millisecond)
		}
		if sent%256 == 0 {
			g := runtime.NumGoroutine()
			peakGoroutines = max(peakGoroutines, g)
			// Ours and pion's per handshake, plus the device's.
			if g > g0+5*maxHandshakes+32 {
				t.Fatalf("after %d hellos: %d goroutines, %d before the flood: not bounded by the pool", sent, g, g0)
			}
		}
	}
	// Under pressure first: the buckets are empty, the queues full.
	for srv.stats.dropped[dropEvicted].Load() < 100 || srv.stats.dropped[dropShed].Load() < 1000 {
		flood()
		if sent > 10_000_000 {
			t.Fatal("ten million hellos neither shed nor evicted enough")
		}
	}

	// Then the device: a new address at first, then a reboot from the address
	// that completed a handshake.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: addr.String(), Identity: k.Identity, Key: k.Secret,
			Endpoint: k.Endpoint, HandshakeTimeout: 60 * time.Second})
		if err != nil {
			done <- fmt.Errorf("handshake under flood: %w", err)
			return
		}
		defer d.Close()
		if _, err := d.Register(ctx); err != nil {
			done <- fmt.Errorf("register under flood: %w", err)
			return
		}
		if err := d.Reboot(ctx); err != nil {
			done <- fmt.Errorf("reboot under flood: %w", err)
			return
		}
		done <- d.Update(ctx)
	}()

	var deviceErr error
	for waiting := true; waiting; {
		select {
		case deviceErr = <-done:
			waiting = false
		default:
			flood()
		}
	}
	if deviceErr != nil {
		var drops []string
		for i := range srv.stats.dropped {
			drops = append(drops, fmt.Sprintf("%s=%d", dropReasonNames[i], srv.stats.dropped[i].Load()))
		}
		t.Fatalf("%v (after %d hellos; admitted new %d retry %d returning %d; drops %v; failed %v)", deviceErr, sent,
			a.admitted[classNew].Load(), a.admitted[classRetry].Load(), a.admitted[classReturning].Load(), drops, srv.Stats().HandshakesFailed)
	}
	if a.admitted[classReturning].Load() == 0 {
		t.Error("the reboot was not admitted as a returning address")
	}

	// A ClientHello answering a cookie for which no handshake waits.
	stale := append([]byte(nil), sp.templates[0]...)
	stale[recordHeaderLen+5] = 1 // message_seq 1
	before := srv.stats.dropped[dropStaleHello].Load()
	_, handshakingBefore := srv.table.counts()
	srv.listeners[0].route(stale, netip.MustParseAddrPort("127.250.0.1:4000"))
	if _, handshaking := srv.table.counts(); srv.stats.dropped[dropStaleHello].Load() != before+1 || handshaking > handshakingBefore {
		t.Error("a stale cookie answer was not dropped, or started a handshake")
	}

	// Nothing leaks: every spoofed handshake ends (evicted or timed out),
	// the pool empties, the goroutines come back, the memory is returned.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, handshaking := srv.table.counts()
		a.mu.Lock()
		emb, pool := a.nEmbryo, a.inPool
		a.mu.Unlock()
		g := runtime.NumGoroutine()
		if handshaking == 0 && emb == 0 && pool == 0 && g <= g0+8 && freed.Load() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the flood: %d handshaking, %d embryonic, %d in the pool, %d goroutines (%d before), memory returned %d times",
				handshaking, emb, pool, g, g0, freed.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := srv.Stats()
	t.Logf("%d spoofed hellos: peak %d embryonic, %d in the pool, %d goroutines (%d before); shed %d, evicted %d; admitted new %d, retry %d, returning %d",
		sent, peakEmbryos, peakPool, peakGoroutines, g0, srv.stats.dropped[dropShed].Load(), srv.stats.dropped[dropEvicted].Load(),
		a.admitted[classNew].Load(), a.admitted[classRetry].Load(), a.admitted[classReturning].Load())
	if st.HandshakesOK < 2 {
		t.Fatalf("%d handshakes completed, want the device's 2", st.HandshakesOK)
	}
}
