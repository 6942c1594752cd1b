package gateway

import (
	"context"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/protocol"
)

// BenchmarkEmbryonicHandshake measures what one embryonic handshake costs
// the gateway (issue 12): a ClientHello from a new address that pion
// answers with its cookie (HelloVerifyRequest, or HelloRetryRequest with a
// cookie) and that is never answered. Each iteration starts a server,
// routes 1,000 ClientHellos as the read loop would, each from its own
// loopback socket so the cookie can be seen to leave, waits for every
// cookie, measures, then closes the server. Reported per embryo: cpu-µs,
// the process CPU (getrusage) from the first ClientHello until every
// cookie left, and cpu-µs-total, including the tear-down at Close; live-B,
// heap and goroutine stacks in use (after a GC) while the embryos wait,
// i.e. what an embryonic handshake holds, and goroutines, those it holds;
// alloc-B, the bytes allocated until its cookie left.
//
//	go test -run '^$' -bench EmbryonicHandshake -benchtime 3x ./gateway/
func BenchmarkEmbryonicHandshake(b *testing.B) {
	for _, v := range []struct {
		name string
		c    client
	}{
		{"dtls13", client{id: []byte("spoofed-identity"), key: make([]byte, 32)}},
		{"dtls12", client{id: []byte("spoofed-identity"), key: make([]byte, 32), version: protocol.Version1_2}},
	} {
		b.Run(v.name, func(b *testing.B) {
			hello := captureClientHello(b, v.c)
			const embryos = 1000
			var cpu, cpuTotal, live, alloc, gor float64
			for b.Loop() {
				r := measureEmbryos(b, hello, embryos)
				cpu += r.cpu
				cpuTotal += r.cpuTotal
				live += r.live
				alloc += r.alloc
				gor += r.goroutines
			}
			n := float64(b.N)
			b.ReportMetric(cpu/n, "cpu-µs/embryo")
			b.ReportMetric(cpuTotal/n, "cpu-µs-total/embryo")
			b.ReportMetric(live/n, "live-B/embryo")
			b.ReportMetric(alloc/n, "alloc-B/embryo")
			b.ReportMetric(gor/n, "goroutines/embryo")
		})
	}
}

type embryoCost struct{ cpu, cpuTotal, live, alloc, goroutines float64 }

func measureEmbryos(b *testing.B, hello []byte, n int) embryoCost {
	b.Helper()
	backend, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer backend.Close()
	sinks := make([]*net.UDPConn, n)
	for i := range sinks {
		if sinks[i], err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			b.Fatalf("sink %d: %v (raise ulimit -n)", i, err)
		}
		defer sinks[i].Close()
	}
	srv, err := New(Config{Store: newMapStore(), Backends: map[string]string{"dm": backend.LocalAddr().String()},
		Listeners: []Listener{{Address: "127.0.0.1:0"}}, HandshakeRate: -1,
		MaxEmbryonic: 2 * n, MaxHandshakes: 2 * n})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	l := srv.listeners[0]

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	c0 := processCPU()
	for _, s := range sinks {
		l.route(hello, unmapped(s.LocalAddr().(*net.UDPAddr).AddrPort()))
	}
	buf := make([]byte, 2048)
	for i, s := range sinks {
		_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := s.Read(buf); err != nil {
			b.Fatalf("embryo %d: no cookie from the gateway: %v", i, err)
		}
	}
	c1 := processCPU()
	var mid runtime.MemStats
	runtime.ReadMemStats(&mid)
	runtime.GC()
	var held runtime.MemStats
	runtime.ReadMemStats(&held)
	g1 := runtime.NumGoroutine()
	cancel()
	<-done
	c2 := processCPU()
	f := float64(n)
	return embryoCost{
		cpu:        (c1 - c0).Seconds() * 1e6 / f,
		cpuTotal:   (c2 - c0).Seconds() * 1e6 / f,
		live:       (float64(held.HeapInuse+held.StackInuse) - float64(before.HeapInuse+before.StackInuse)) / f,
		alloc:      float64(mid.TotalAlloc-before.TotalAlloc) / f,
		goroutines: float64(g1-g0) / f,
	}
}

// processCPU is the user+system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// captureClientHello records the first datagram a real client sends.
func captureClientHello(t testing.TB, k client) []byte {
	t.Helper()
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, _ = k.dial(ctx, sink.LocalAddr().(*net.UDPAddr))
	}()
	buf := make([]byte, 2000)
	_ = sink.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := sink.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}
