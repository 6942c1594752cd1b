// Package scale measures the key stores at fleet size. It has no code of its
// own, only benchmarks:
//
//	GATEWAY_BENCH_KEYS=1000000 go test -run '^$' -bench . -benchtime 1x -timeout 30m ./pskstore/scale/
//
// The default size (20,000 keys) keeps a plain `go test ./...` quick.
package scale

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/memory"
)

func fleetSize() int {
	if n, err := strconv.Atoi(os.Getenv("GATEWAY_BENCH_KEYS")); err == nil && n > 0 {
		return n
	}
	return 20000
}

func fleet(n int) []pskstore.Key {
	keys := make([]pskstore.Key, n)
	for i := range keys {
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		keys[i] = pskstore.Key{Identity: []byte(fmt.Sprintf("device-%07d", i)), Secret: secret,
			Endpoint: fmt.Sprintf("urn:dev:%07d", i)}
	}
	return keys
}

// heapMiB is the live heap after a collection: what a loaded store costs.
func heapMiB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// lookupPercentiles measures single lookups of random existing identities.
func lookupPercentiles(b *testing.B, s pskstore.Store, keys []pskstore.Key) {
	const samples = 20000
	lat := make([]time.Duration, samples)
	ctx := context.Background()
	for i := range lat {
		id := keys[(i*7919)%len(keys)].Identity
		start := time.Now()
		if _, err := s.Lookup(ctx, id); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(start)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[samples/2].Nanoseconds()), "lookup-p50-ns")
	b.ReportMetric(float64(lat[samples*99/100].Nanoseconds()), "lookup-p99-ns")
}

// BenchmarkFileStore writes a key file of GATEWAY_BENCH_KEYS entries, then
// measures loading it (every key through the RFC 9257 policy) and lookups.
func BenchmarkFileStore(b *testing.B) {
	n := fleetSize()
	keys := fleet(n)
	path := filepath.Join(b.TempDir(), "keys.yaml")
	start := time.Now()
	if err := file.Save(path, keys); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "save-keys/s")
	st, _ := os.Stat(path)
	b.ReportMetric(float64(st.Size())/(1<<20), "file-MiB")
	keys = nil
	before := heapMiB()
	for b.Loop() {
		start = time.Now()
		s, err := file.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "load-s")
		b.ReportMetric(heapMiB()-before, "heap-MiB")
		keys, err := s.Keys(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		lookupPercentiles(b, s, keys)
	}
}

// BenchmarkMemoryStore measures building the memory store and lookups.
func BenchmarkMemoryStore(b *testing.B) {
	n := fleetSize()
	keys := fleet(n)
	for b.Loop() {
		start := time.Now()
		s, err := memory.New(keys...)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "import-keys/s")
		lookupPercentiles(b, s, keys)
	}
}
