package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/pskstore"
)

// The legitimate devices of the flood scenario, run in the runner itself
// (internal/devsim) so that every handshake attempt is timed from its first
// ClientHello: returning devices reboot from the address and port of their
// session, new devices dial from a loopback address never used before.
// Both use pion's normal ClientHello retransmission (1 s, doubling).

// attempts collects handshake outcomes: durations of successes, and
// failures (counted as never completing).
type attempts struct {
	mu     sync.Mutex
	ok     []time.Duration
	failed int
	errs   map[string]int
}

func (a *attempts) record(ev devsim.HandshakeEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ev.Err != nil {
		a.failed++
		if a.errs == nil {
			a.errs = map[string]int{}
		}
		a.errs[errKind(ev.Err)]++
		return
	}
	a.ok = append(a.ok, ev.Duration)
}

func errKind(err error) string {
	switch s := err.Error(); {
	case strings.Contains(s, "deadline exceeded"), strings.Contains(s, "timeout"):
		return "timeout"
	case strings.Contains(s, "alert"):
		return "alert"
	default:
		return "other"
	}
}

// within returns how many attempts completed within d, and how many there
// were.
func (a *attempts) within(d time.Duration) (n, total int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, x := range a.ok {
		if x <= d {
			n++
		}
	}
	return n, len(a.ok) + a.failed
}

// quantile of all attempts, failures counting as infinitely slow; -1 when
// the quantile falls on a failure.
func (a *attempts) quantile(q float64) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	all := slices.Clone(a.ok)
	slices.Sort(all)
	n := len(all) + a.failed
	if n == 0 {
		return 0
	}
	i := int(q * float64(n-1))
	if i >= len(all) {
		return -1
	}
	return all[i]
}

// legit runs the returning and new devices of one flood run.
type legit struct {
	server             string
	keys               []pskstore.Key // returning devices first, then new ones
	returning, fresh   int
	returningA, freshA attempts
	registerErrs       int
	mu                 sync.Mutex
	devices            []*devsim.Device
	nextIP             uint32
}

// config is a device's configuration; the handshakes run for reason are
// recorded in rec.
func (l *legit) config(k pskstore.Key, local string, rec *attempts, reason devsim.HandshakeReason) devsim.DeviceConfig {
	return devsim.DeviceConfig{Server: l.server, Identity: k.Identity, Key: k.Secret, Endpoint: k.Endpoint,
		LocalAddr: local, HandshakeTimeout: 15 * time.Second,
		OnHandshake: func(ev devsim.HandshakeEvent) {
			if ev.Reason == reason {
				rec.record(ev)
			}
		}}
}

// connect dials the returning devices before the flood, from 127.0.0.1,
// and registers them: their address completed a handshake.
func (l *legit) connect(ctx context.Context) error {
	for i := range l.returning {
		// Reboots are recorded, not this first handshake before the flood.
		d, err := devsim.Dial(ctx, l.config(l.keys[i], "", &l.returningA, devsim.HandshakeReboot))
		if err != nil {
			return fmt.Errorf("returning device %d: %w", i, err)
		}
		if _, err := d.Register(ctx); err != nil {
			_ = d.Close()
			return fmt.Errorf("returning device %d: register: %w", i, err)
		}
		l.devices = append(l.devices, d)
	}
	return nil
}

// freshAddr is a loopback address never used in the run (127.64.0.0/10).
func (l *legit) freshAddr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextIP++
	n := l.nextIP
	return fmt.Sprintf("127.%d.%d.%d:0", 64+byte(n>>16)%64, byte(n>>8), byte(n)|1)
}

// run drives every device in a loop until stop is closed: a returning device
// reboots (handshake from its port, Register), a new device dials from a
// fresh address, registers and closes; each pauses a second between
// attempts. Attempts in progress when stop closes are finished and counted.
func (l *legit) run(stop <-chan struct{}) {
	var wg sync.WaitGroup
	pause := func() bool {
		select {
		case <-stop:
			return false
		case <-time.After(time.Second):
			return true
		}
	}
	for _, d := range l.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_ = d.Reboot(ctx) // the handshake is recorded; Register errors too
				cancel()
				if !pause() {
					return
				}
			}
		}()
	}
	for i := range l.fresh {
		k := l.keys[l.returning+i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if d, err := devsim.Dial(ctx, l.config(k, l.freshAddr(), &l.freshA, devsim.HandshakeDial)); err == nil {
					if _, err := d.Register(ctx); err != nil {
						l.mu.Lock()
						l.registerErrs++
						l.mu.Unlock()
					}
					_ = d.Close()
				}
				cancel()
				if !pause() {
					return
				}
			}
		}()
	}
	wg.Wait()
}

func (l *legit) close() {
	for _, d := range l.devices {
		_ = d.Close()
	}
}

// gatewayMetrics reads the gateway's /metrics: unlabelled series by name,
// labelled ones by name{labels}.
func gatewayMetrics(url string) (map[string]float64, error) {
	if url == "" {
		return nil, fmt.Errorf("no admin listener")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
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

// procStat is the CPU time and RSS of a process.
func procStat(pid int) (cpu time.Duration, rss int64, err error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			rss = kb << 10
		}
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, rss, nil
}

// udpRcvbufErrors is the kernel's count of UDP datagrams dropped for a full
// socket receive buffer (/proc/net/snmp), machine-wide.
func udpRcvbufErrors() int64 {
	data, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return -1
	}
	var names []string
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	return -1
}
