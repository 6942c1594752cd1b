package postgres

import (
	"context"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// benchKeys is the table size of the benchmarks: GATEWAY_BENCH_KEYS, 10000
// by default (the figure is 1000000).
func benchKeys(b *testing.B) int {
	b.Helper()
	v := os.Getenv("GATEWAY_BENCH_KEYS")
	if v == "" {
		return 10000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("GATEWAY_BENCH_KEYS=%q: want a positive integer", v)
	}
	return n
}

// reportLatency reports the median and 99th percentile of ds.
func reportLatency(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	q := func(p float64) float64 { return float64(ds[int(p*float64(len(ds)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

// BenchmarkLookup measures Lookup, the handshake path, on a table of
// GATEWAY_BENCH_KEYS keys: one goroutine, then 16 at once.
func BenchmarkLookup(b *testing.B) {
	n := benchKeys(b)
	d := newDB(b)
	s := d.open(b, appName(b, "bench"), WithMaxConns(16))
	keys := newKeys(b, "bench", n)
	if err := s.PutMany(context.Background(), keys, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := admin(b).Exec(context.Background(), "ANALYZE "+d.schema+".psk_keys"); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		ds := make([]time.Duration, 0, 1<<16)
		for b.Loop() {
			k := keys[rand.IntN(len(keys))]
			t0 := time.Now()
			if _, err := s.Lookup(context.Background(), k.Identity); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(t0))
		}
		reportLatency(b, ds)
	})
	b.Run("parallel16", func(b *testing.B) {
		var mu sync.Mutex
		var all []time.Duration
		b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			var ds []time.Duration
			for pb.Next() {
				k := keys[rand.IntN(len(keys))]
				t0 := time.Now()
				if _, err := s.Lookup(context.Background(), k.Identity); err != nil {
					b.Error(err)
					return
				}
				ds = append(ds, time.Since(t0))
			}
			mu.Lock()
			all = append(all, ds...)
			mu.Unlock()
		})
		reportLatency(b, all)
	})
}

// BenchmarkPutMany measures a bulk import of GATEWAY_BENCH_KEYS keys into an
// empty table, policy checks included.
func BenchmarkPutMany(b *testing.B) {
	n := benchKeys(b)
	keys := newKeys(b, "bench", n)
	for b.Loop() {
		b.StopTimer()
		s := newDB(b).open(b, appName(b, "bench"))
		b.StartTimer()
		if err := s.PutMany(context.Background(), keys, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}
