package main

import (
	"slices"
	"sync"
	"testing"
	"time"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, v := range ms {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

// Nearest rank: the smallest sample with at least p% of the samples at or
// below it.
func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100 ms
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample p50", durations(7), 50, 7 * time.Millisecond},
		{"one sample p99", durations(7), 99, 7 * time.Millisecond},
		{"1..100 p50", hundred, 50, 50 * time.Millisecond},
		{"1..100 p95", hundred, 95, 95 * time.Millisecond},
		{"1..100 p99", hundred, 99, 99 * time.Millisecond}, // not 100: 99*100/100 is exact
		{"1..100 p100", hundred, 100, 100 * time.Millisecond},
		{"four p50", durations(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"four p51", durations(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"four p75", durations(1, 2, 3, 4), 75, 3 * time.Millisecond},
		{"four p99", durations(1, 2, 3, 4), 99, 4 * time.Millisecond},
		{"tiny p", durations(1, 2, 3, 4), 0.001, 1 * time.Millisecond},
		{"ties", durations(5, 5, 5, 9), 75, 5 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestRecorderSummary(t *testing.T) {
	r := newRecorder()
	if got := r.snapshot(); got != (latency{}) {
		t.Errorf("empty recorder: %+v", got)
	}
	// Added out of order: the summary sorts.
	for _, d := range durations(30, 10, 20, 40) {
		r.add(d)
	}
	got := r.snapshot()
	want := latency{Count: 4, Mean: 25, P50: 20, P95: 40, P99: 40, Max: 40}
	if got != want {
		t.Errorf("snapshot = %+v, want %+v", got, want)
	}
	if got := r.reset(); got != want {
		t.Errorf("reset = %+v, want %+v", got, want)
	}
	if got := r.snapshot(); got.Count != 0 {
		t.Errorf("after reset: %+v", got)
	}
	// Sub-millisecond values keep microsecond precision.
	r.add(1234 * time.Microsecond)
	if got := r.snapshot(); got.P50 != 1.234 {
		t.Errorf("p50 = %v ms, want 1.234", got.P50)
	}
}

// Past its capacity a recorder keeps a bounded uniform sample: count, mean
// and max stay exact, and percentiles of a uniform stream stay close.
func TestRecorderReservoir(t *testing.T) {
	r := newRecorderCap(1000)
	const n = 100_000
	for i := 1; i <= n; i++ {
		r.add(time.Duration(i) * time.Microsecond)
	}
	if len(r.samples) != 1000 {
		t.Fatalf("kept %d samples, want 1000", len(r.samples))
	}
	got := r.snapshot()
	if got.Count != n || got.Max != 100 || got.Mean < 49.99 || got.Mean > 50.01 {
		t.Errorf("count %d max %v mean %v", got.Count, got.Max, got.Mean)
	}
	for _, q := range []struct{ got, want float64 }{{got.P50, 50}, {got.P95, 95}, {got.P99, 99}} {
		if q.got < q.want-5 || q.got > q.want+5 {
			t.Errorf("percentile %v ms, want %v±5 (uniform 0..100 ms)", q.got, q.want)
		}
	}
}

func TestRecorderConcurrent(t *testing.T) {
	r := newRecorder()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				r.add(time.Duration(g*1000+i) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	if got := r.snapshot(); got.Count != 8000 {
		t.Errorf("count %d", got.Count)
	}
	s := slices.Clone(r.samples)
	slices.Sort(s)
	if s[0] != 0 || s[len(s)-1] != 7999*time.Microsecond {
		t.Errorf("samples span %v..%v", s[0], s[len(s)-1])
	}
}

func TestEchoAnswer(t *testing.T) {
	req, err := rawRequest("POST", "/echo", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(req) != 100 {
		t.Fatalf("request is %d bytes, want 100", len(req))
	}
	ans := slices.Clone(req)
	echoAnswer(ans)
	if ans[0]>>4&3 != 2 || ans[1] != 0x45 || !slices.Equal(ans[2:], req[2:]) {
		t.Errorf("answer header % x, want an ACK 2.05 with the same Message ID, token and bytes", ans[:4])
	}
	small, err := rawRequest("GET", "/", 13)
	if err != nil || len(small) != 12 { // header and token; 13 leaves no room for marker and payload
		t.Errorf("small request %d bytes, %v", len(small), err)
	}
	if _, err := rawRequest("PATCH", "/", 100); err == nil {
		t.Error("PATCH accepted")
	}
}
