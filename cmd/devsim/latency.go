package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// maxSamples bounds the samples a recorder keeps; past it, reservoir
// sampling keeps a uniform sample of everything recorded, so memory stays
// bounded however long a run lasts while percentiles stay unbiased.
const maxSamples = 200_000

// recorder collects durations. Safe for concurrent use.
type recorder struct {
	mu      sync.Mutex
	samples []time.Duration
	count   int64
	sum     time.Duration
	max     time.Duration
	cap     int
	rng     *rand.Rand
}

func newRecorder() *recorder { return newRecorderCap(maxSamples) }

func newRecorderCap(n int) *recorder {
	return &recorder{cap: n, rng: rand.New(rand.NewPCG(1, 2))}
}

func (r *recorder) add(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	r.sum += d
	r.max = max(r.max, d)
	if len(r.samples) < r.cap {
		r.samples = append(r.samples, d)
		return
	}
	// Algorithm R: keep the new sample with probability cap/count.
	if j := r.rng.Int64N(r.count); j < int64(r.cap) {
		r.samples[j] = d
	}
}

// snapshot returns the summary of everything recorded so far.
func (r *recorder) snapshot() latency {
	r.mu.Lock()
	s := slices.Clone(r.samples)
	count, sum, mx := r.count, r.sum, r.max
	r.mu.Unlock()
	return summarize(s, count, sum, mx)
}

// reset returns the summary and starts over (for the progress line).
func (r *recorder) reset() latency {
	r.mu.Lock()
	s, count, sum, mx := r.samples, r.count, r.sum, r.max
	r.samples, r.count, r.sum, r.max = nil, 0, 0, 0
	r.mu.Unlock()
	return summarize(s, count, sum, mx)
}

// latency is a summary of durations in milliseconds (JSON-friendly).
type latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P95   float64 `json:"p95_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func summarize(s []time.Duration, count int64, sum, mx time.Duration) latency {
	if count == 0 {
		return latency{}
	}
	slices.Sort(s)
	return latency{
		Count: count,
		Mean:  ms(sum / time.Duration(count)),
		P50:   ms(percentile(s, 50)),
		P95:   ms(percentile(s, 95)),
		P99:   ms(percentile(s, 99)),
		Max:   ms(mx),
	}
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted samples by
// the nearest-rank method: the smallest sample such that at least p% of the
// samples are less than or equal to it. Zero for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(n) / 100)) // p*n first: exact for integers
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}
