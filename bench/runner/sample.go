package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// gwSample is what the runner reads about a running gateway at one
// moment: its Go heap right after a forced collection, its goroutines and
// threads, its sessions and open files (admin /metrics), its RSS (/proc),
// and the kernel's socket memory (/proc/slabinfo, /proc/net/sockstat).
type gwSample struct {
	at          time.Time
	heap        float64 // go_memstats_heap_alloc_bytes after GC
	goroutines  float64
	threads     float64 // go_threads
	established float64 // gateway_sessions{state="established"}
	openFDs     float64 // process_open_fds
	rss         int64   // VmRSS, bytes
	cpu         time.Duration
	slab        map[string]slabCache // nil if /proc/slabinfo is unreadable
	udpInUse    int64                // /proc/net/sockstat "UDP: inuse"
	udpMemPages int64                // ... "mem" (pages of socket buffers)
	heapProfile string               // path of the heap profile taken for the GC
}

// slabCache is one line of /proc/slabinfo.
type slabCache struct {
	objects int64 // active objects
	size    int64 // object size, bytes
}

var httpClient = &http.Client{Timeout: 2 * time.Minute}

// sampleGateway forces a garbage collection through the gateway's pprof
// heap endpoint (?gc=1), keeps that heap profile as profile, and reads
// the rest. The heap figure is HeapAlloc read right after: live objects
// plus the little allocated since.
func sampleGateway(srv *server, profile string) (gwSample, error) {
	s := gwSample{at: time.Now(), heapProfile: profile}
	if srv.pprof == "" || srv.metrics == "" {
		return s, fmt.Errorf("the gateway has no admin listener with pprof")
	}
	if err := fetch(srv.pprof+"/heap?gc=1", profile); err != nil {
		return s, err
	}
	m, err := scrape(srv.metrics)
	if err != nil {
		return s, err
	}
	var ok bool
	for name, dst := range map[string]*float64{
		"go_memstats_heap_alloc_bytes":          &s.heap,
		"go_goroutines":                         &s.goroutines,
		"go_threads":                            &s.threads,
		`gateway_sessions{state="established"}`: &s.established,
		"process_open_fds":                      &s.openFDs,
	} {
		if *dst, ok = m[name]; !ok {
			return s, fmt.Errorf("%s: no %s", srv.metrics, name)
		}
	}
	if s.rss, err = procRSS(srv.pid()); err != nil {
		return s, err
	}
	if s.cpu, err = procCPU(srv.pid()); err != nil {
		return s, err
	}
	s.slab = readSlab()
	s.udpInUse, s.udpMemPages = readSockstat()
	return s, nil
}

// fetch writes the body of url to path.
func fetch(url, path string) error {
	resp, err := httpClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// scrape reads a Prometheus text exposition into name{labels} -> value.
func scrape(url string) (map[string]float64, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return parseMetrics(resp.Body)
}

// parseMetrics reads a Prometheus text exposition.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(r, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// procRSS is VmRSS of pid in bytes.
func procRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// procCPU is utime+stime of pid (clock ticks of 10 ms): enough over the
// minutes of the scale step's idle wait.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(u+s) * 10 * time.Millisecond, nil
}

// readSlab reads /proc/slabinfo (root only); nil when it cannot.
func readSlab() map[string]slabCache {
	data, err := os.ReadFile("/proc/slabinfo")
	if err != nil {
		return nil
	}
	out := map[string]slabCache{}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "slabinfo") {
			continue
		}
		n, err1 := strconv.ParseInt(f[1], 10, 64)
		size, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 == nil && err2 == nil {
			out[f[0]] = slabCache{objects: n, size: size}
		}
	}
	return out
}

// readSockstat reads the UDP line of /proc/net/sockstat: sockets in use
// and their buffers' memory in pages.
func readSockstat() (inuse, mem int64) {
	data, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "UDP: ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			v, _ := strconv.ParseInt(f[i+1], 10, 64)
			switch f[i] {
			case "inuse":
				inuse = v
			case "mem":
				mem = v
			}
		}
	}
	return inuse, mem
}

// slabGrowth is the kernel memory that appeared between two samples in
// the caches that grew by at least half an object per socket opened
// (sockets: the UDP sockets opened in between): per socket, and the caches
// by name. Other caches are left out, so that other work on the machine
// (a build filling the dentry cache) does not count unless it happens to
// match that pattern; the report names the caches.
func slabGrowth(before, after map[string]slabCache, sockets int64) (perSocket float64, caches []string) {
	if before == nil || after == nil || sockets <= 0 {
		return 0, nil
	}
	type grown struct {
		name  string
		bytes int64
		per   float64
	}
	var gs []grown
	var total int64
	for name, a := range after {
		d := a.objects - before[name].objects
		if d*2 < sockets {
			continue
		}
		b := d * a.size
		total += b
		gs = append(gs, grown{name, b, float64(d) / float64(sockets)})
	}
	for i := range gs { // largest first
		for j := i + 1; j < len(gs); j++ {
			if gs[j].bytes > gs[i].bytes {
				gs[i], gs[j] = gs[j], gs[i]
			}
		}
	}
	for _, g := range gs {
		caches = append(caches, fmt.Sprintf("%s %.0f B (%.1f/socket)", g.name, float64(g.bytes)/float64(sockets), g.per))
	}
	return float64(total) / float64(sockets), caches
}
