//go:build !race

// The flood test measures behaviour under CPU pressure, which the race
// detector's 5-10x slowdown distorts; scripts/test.sh runs it in its own
// step without -race.

package gateway

import (
	"context"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
)

// TestClientHelloFloodLegitimateDeviceGetsIn: while thousands of
// ClientHellos arrive from many source ports that never answer the cookie,
// a legitimate device still completes its handshake and exchanges
// messages, and the number of sessions stays bounded by MaxEmbryonic.
func TestClientHelloFloodLegitimateDeviceGetsIn(t *testing.T) {
	legitIP := net.IPv4(127, 0, 0, 2)
	if pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: legitIP}); err != nil {
		t.Fatalf("need 127.0.0.2 on loopback: %v", err)
	} else {
		pc.Close()
	}
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	k := testKey("legit", 1)
	k.Endpoint = "urn:dev:legit"
	const maxEmbryonic = 2048 // the default
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.Addr().String()},
		HandshakeRate: -1}) // per-IP limits off: the embryonic cap alone must protect
	hello := captureClientHello(t, client{id: []byte("spoofed"), key: k.Secret})

	const sockets, rounds = 500, 20 // 10,000 ClientHellos
	stop := make(chan struct{})
	var wg sync.WaitGroup
	peak := 0
	var peakMu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r := 0; r < rounds; r++ {
			// Fresh sockets every round: every ClientHello comes from a
			// source port the gateway has never seen.
			for i := 0; i < sockets; i++ {
				c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, addr)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = c.Write(hello)
				_ = c.Close()
			}
			peakMu.Lock()
			peak = max(peak, srv.Stats().Sessions)
			peakMu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond): // about 10,000 a second
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	time.Sleep(100 * time.Millisecond) // the flood is under way
	start := time.Now()
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: addr.String(), Identity: k.Identity, Key: k.Secret, Endpoint: k.Endpoint,
		HandshakeTimeout: 25 * time.Second}) // a real device retries for a long time too
	if err != nil {
		t.Fatalf("legitimate handshake under flood: %v", err)
	}
	defer d.Close()
	if _, err := d.Register(ctx); err != nil {
		t.Fatalf("register under flood: %v", err)
	}
	if err := d.Update(ctx); err != nil {
		t.Fatalf("update under flood: %v", err)
	}
	took := time.Since(start)
	close(stop)
	wg.Wait()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := srv.Stats()
	t.Logf("legitimate handshake+register+update took %s under flood; peak sessions %d; evicted %d; heap %d MiB",
		took, peak, srv.stats.dropped[dropEvicted].Load(), ms.HeapInuse>>20)
	// Sessions past their first round trip are not embryonic, and the
	// sampling races with admission: the bound is the cap's order of
	// magnitude, not the exact cap.
	if peak > 2*maxEmbryonic {
		t.Fatalf("sessions peaked at %d, cap %d", peak, maxEmbryonic)
	}
	if st.Established < 1 {
		t.Fatal("legitimate session not established")
	}
}
