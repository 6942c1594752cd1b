// Command restart measures what a gateway restart costs devices (issue 11):
// a fleet of simulated LwM2M devices holds sessions and sends a request
// (an LwM2M Update, confirmable, with CoAP retransmission) every second
// while the gateway is stopped with SIGTERM (handoff of sealed session
// snapshots) and restarted, then killed with SIGKILL and restarted. It
// reports, per restart: handshakes the new process ran, requests lost
// beyond CoAP retransmission, and the time from the old process's exit to
// the first answered request.
//
//	go run ./bench/restart --devices 1000
//
// Everything runs on loopback and stops by itself.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
)

func main() {
	devices := flag.Int("devices", 1000, "simulated devices")
	bin := flag.String("gateway", "", "gateway binary (default: built from ./cmd/gateway)")
	steady := flag.Duration("steady", 10*time.Second, "traffic before and after each restart")
	jsonOut := flag.Bool("json", false, "print the result as JSON")
	flag.Parse()
	if err := run(*devices, *bin, *steady, *jsonOut); err != nil {
		fmt.Fprintln(os.Stderr, "restart:", err)
		os.Exit(1)
	}
}

// phase is one restart's result.
type phase struct {
	Signal         string  `json:"signal"`
	Handshakes     float64 `json:"handshakes_after"` // on the new process
	Restored       float64 `json:"restored"`
	Requests       int64   `json:"requests"` // during the phase
	Lost           int64   `json:"lost"`     // failed after every CoAP retransmission
	FirstAnswerMS  float64 `json:"first_answer_ms"`
	DowntimeMS     float64 `json:"restart_ms"` // old exit to new listening
	SlowestAnswerS float64 `json:"slowest_request_s"`
}

func run(n int, bin string, steady time.Duration, jsonOut bool) error {
	dir, err := os.MkdirTemp("", "gw-restart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		bin = filepath.Join(dir, "gateway")
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/gateway").CombinedOutput(); err != nil {
			return fmt.Errorf("build: %v: %s", err, out)
		}
	}
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		return err
	}
	defer backend.Close()
	port, admin := freePort("udp"), freePort("tcp")
	type key struct {
		id  string
		key []byte
	}
	keys := make([]key, n)
	var kf strings.Builder
	kf.WriteString("keys:\n")
	for i := range keys {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		keys[i] = key{fmt.Sprintf("bench-%05d", i), k}
		fmt.Fprintf(&kf, "  - identity: %q\n    key_hex: %q\n    endpoint: %q\n    legacy: true\n", keys[i].id, hex.EncodeToString(k), "urn:dev:"+keys[i].id)
	}
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	files := map[string]string{
		"keys.yaml": kf.String(),
		"kek":       hex.EncodeToString(kek) + "\n",
		"gateway.yaml": fmt.Sprintf(`listeners: [{address: "127.0.0.1:%d"}]
backends: {dm: {address: %q}}
store: {path: keys.yaml, kek_file: kek, insecure_plaintext_keys: true}
sessions: {snapshot: sessions.snap, checkpoint_interval: 2s, drain_timeout: 3s}
limits: {handshake_rate: 0, max_embryonic: 4096}
log: {level: info}
admin: {address: "127.0.0.1:%d"}
`, port, backend.Addr().String(), admin),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	cfg := filepath.Join(dir, "gateway.yaml")
	start := func() (*exec.Cmd, time.Time, error) {
		cmd := exec.Command(bin, "serve", "--config", cfg)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			return nil, time.Time{}, err
		}
		listening := make(chan time.Time, 1)
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if strings.Contains(sc.Text(), `"msg":"listening"`) {
					select {
					case listening <- time.Now():
					default:
					}
				}
			}
		}()
		select {
		case at := <-listening:
			return cmd, at, nil
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			return nil, time.Time{}, fmt.Errorf("gateway did not start")
		}
	}
	gw, _, err := start()
	if err != nil {
		return err
	}
	defer func() { _ = gw.Process.Kill(); _, _ = gw.Process.Wait() }()

	// The fleet: a third DTLS 1.2 (CCM_8), the rest DTLS 1.3.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	devs := make([]*devsim.Device, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	var dialErr atomic.Value
	for i := range devs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c := devsim.DeviceConfig{Server: fmt.Sprintf("127.0.0.1:%d", port), Identity: []byte(keys[i].id), Key: keys[i].key,
				Endpoint: "urn:dev:" + keys[i].id, Lifetime: time.Hour, ACKTimeout: 2 * time.Second, MaxRetransmit: 4}
			if i%3 == 2 {
				c.Version, c.CipherSuites = "1.2", []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM_8}
			}
			dctx, dcancel := context.WithTimeout(ctx, 60*time.Second)
			defer dcancel()
			d, err := devsim.Dial(dctx, c)
			if err == nil {
				_, err = d.Register(dctx)
			}
			if err != nil {
				dialErr.Store(err)
				return
			}
			devs[i] = d
		}()
	}
	wg.Wait()
	if err, _ := dialErr.Load().(error); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	defer func() {
		for _, d := range devs {
			_ = d.Close()
		}
	}()

	// Every device sends an Update every second, staggered.
	var requests, lost atomic.Int64
	var mu sync.Mutex
	var answered []time.Time
	var slowest time.Duration
	load, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * time.Second / time.Duration(n))
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-load.Done():
					return
				case <-t.C:
				}
				requests.Add(1)
				began := time.Now()
				rctx, rcancel := context.WithTimeout(load, 60*time.Second)
				err := d.Update(rctx)
				rcancel()
				if err != nil {
					if load.Err() == nil {
						lost.Add(1)
					}
					continue
				}
				now := time.Now()
				mu.Lock()
				answered = append(answered, now)
				slowest = max(slowest, now.Sub(began))
				mu.Unlock()
			}
		}()
	}
	scrape := func(metric, label string) float64 {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", admin))
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var sum float64
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, metric) && strings.Contains(line, label) {
				if f := strings.Fields(line); len(f) == 2 {
					v, _ := strconv.ParseFloat(f[1], 64)
					sum += v
				}
			}
		}
		return sum
	}
	var results []phase
	time.Sleep(steady)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		r0, l0 := requests.Load(), lost.Load()
		slowest = 0
		if err := gw.Process.Signal(sig); err != nil {
			return err
		}
		_, _ = gw.Process.Wait()
		exited := time.Now()
		var up time.Time
		if gw, up, err = start(); err != nil {
			return err
		}
		time.Sleep(steady)
		mu.Lock()
		first := time.Time{}
		sort.Slice(answered, func(i, j int) bool { return answered[i].Before(answered[j]) })
		for _, a := range answered {
			if a.After(exited) {
				first = a
				break
			}
		}
		p := phase{Signal: sig.String(), Handshakes: scrape("gateway_handshakes_total", `result="ok"`),
			Restored: scrape("gateway_session_snapshots_total", `event="restored"`),
			Requests: requests.Load() - r0, Lost: lost.Load() - l0,
			FirstAnswerMS:  float64(first.Sub(exited).Microseconds()) / 1000,
			DowntimeMS:     float64(up.Sub(exited).Microseconds()) / 1000,
			SlowestAnswerS: slowest.Seconds()}
		mu.Unlock()
		results = append(results, p)
	}
	stopLoad()
	wg.Wait()
	if jsonOut {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"devices": n, "phases": results})
	}
	fmt.Printf("%d devices, one Update per second each (CoAP ACK_TIMEOUT 2 s, 4 retransmissions)\n\n", n)
	fmt.Println("| restart | handshakes on the new process | sessions restored | requests | lost beyond retransmission | exit → listening | exit → first answer | slowest request |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, p := range results {
		fmt.Printf("| %s | %.0f | %.0f | %d | %d | %.0f ms | %.0f ms | %.1f s |\n", p.Signal, p.Handshakes, p.Restored,
			p.Requests, p.Lost, p.DowntimeMS, p.FirstAnswerMS, p.SlowestAnswerS)
	}
	return nil
}

// freePort returns a free loopback port for network "udp" or "tcp".
func freePort(network string) int {
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		defer pc.Close()
		return pc.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
