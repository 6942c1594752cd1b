package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// slabGrowth counts the caches that grew by at least half an object per
// socket, per socket, and leaves the others (noise) out.
func TestSlabGrowth(t *testing.T) {
	before := map[string]slabCache{"UDP": {100, 1344}, "filp": {1000, 192}, "dentry": {5000, 192}, "kmalloc-64": {10, 64}}
	after := map[string]slabCache{"UDP": {1100, 1344}, "filp": {2000, 192}, "dentry": {5300, 192}, "kmalloc-64": {2010, 64}, "new": {600, 8}}
	per, caches := slabGrowth(before, after, 1000)
	want := 1344.0 + 192 + 2*64 + 0.6*8
	if per != want {
		t.Errorf("per socket %.1f B, want %.1f", per, want)
	}
	joined := strings.Join(caches, ", ")
	if len(caches) != 4 || strings.Contains(joined, "dentry") || !strings.HasPrefix(caches[0], "UDP ") {
		t.Errorf("caches %q: want UDP first, no dentry (grew 0.3 per socket)", caches)
	}
	if per, caches := slabGrowth(nil, after, 1000); per != 0 || caches != nil {
		t.Errorf("without slabinfo: %v %v", per, caches)
	}
}

// bucketOf sorts functions into kinds of work.
func TestBucketOf(t *testing.T) {
	for fn, want := range map[string]string{
		"internal/runtime/syscall/linux.Syscall6":                    "system calls",
		"syscall.Syscall6":                                           "system calls",
		"golang.org/x/sys/unix.EpollWait":                            "system calls",
		"crypto/internal/fips140/aes/gcm.open":                       "crypto",
		"runtime.mallocgc":                                           "GC and allocation",
		"runtime.scanobject":                                         "GC and allocation",
		"runtime.findRunnable":                                       "scheduler and locks",
		"internal/sync.(*Mutex).Lock":                                "scheduler and locks",
		"github.com/lwm2m-gateway/gateway/gateway.(*listener).route": "gateway code",
		"github.com/pion/dtls/v4.(*Conn).readAndBuffer":              "pion (other than crypto)",
		"runtime.memmove":                                            "other runtime",
		"encoding/binary.BigEndian.Uint16":                           "other",
	} {
		if got := bucketOf(fn); got != want {
			t.Errorf("bucketOf(%s) = %s, want %s", fn, got, want)
		}
	}
}

// parseMetrics reads metric lines with and without labels and skips
// comments.
func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader("# HELP x\ngo_goroutines 18\ngateway_sessions{state=\"established\"} 100000\nbad\n"))
	if err != nil || m["go_goroutines"] != 18 || m[`gateway_sessions{state="established"}`] != 100000 || len(m) != 2 {
		t.Errorf("parseMetrics: %v, %v", m, err)
	}
}

// owns finds a UDP socket of this process by its port, and not a port it
// does not hold.
func TestOwns(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	if !owns(os.Getpid(), fmt.Sprintf(":%04X", port)) {
		t.Errorf("owns: our socket on port %d not found", port)
	}
	c.Close()
	if owns(os.Getpid(), fmt.Sprintf(":%04X", port)) {
		t.Errorf("owns: port %d still ours after Close", port)
	}
}

// With three repetitions or more a ratio row is the median of the
// per-repetition ratios: one run disturbed by the machine (repetition 2's
// pion run here) does not move it; with two it is the ratio of the means.
func TestRatioRowMedianOfPairs(t *testing.T) {
	run := func(rep int, us float64) *result {
		s := &summary{}
		s.Server = &serverSummary{CPUPerHandshakeUS: us}
		return &result{rep: rep, sum: s}
	}
	gw := []*result{run(1, 1000), run(2, 1000), run(3, 950)}
	pion := []*result{run(1, 1000), run(2, 500), run(3, 1000)}
	r := ratioRow("hs", gw, pion, cpuHS, 1.05, "µs", "raw pion", "")
	if r.ratio != "1.00×" || r.met != "yes" || r.gw != "1000.0 µs" || r.other != "raw pion 1000.0 µs" {
		t.Errorf("3 repetitions: %+v, want the median ratio 1.00× and median values", r)
	}
	r = ratioRow("hs", gw[:2], pion[:2], cpuHS, 1.05, "µs", "raw pion", "")
	if r.ratio != "1.33×" || r.met != "NO" {
		t.Errorf("2 repetitions: %+v, want the ratio of the means 1.33×", r)
	}
}
