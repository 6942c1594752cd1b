package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"time"
)

// The flood generator (issue 12): spoofed ClientHellos, each from a new
// source address and port, whose cookie exchange is never answered. As
// root it writes them with a raw IPv4 socket (IP_HDRINCL), source addresses
// spoofed inside 127.0.0.0/8; otherwise it binds a fresh UDP socket on a
// random 127.0.0.0/8 address for every hello. Both only ever reach a
// loopback server: anything else is refused before a packet is built.

// floodOptions are the --flood flags.
type floodOptions struct {
	rate      float64       // distinct hellos per second
	repeat    int           // each hello sent this many times
	repeatGap time.Duration // between two sends of one hello
	mixSpec   string        // DTLS versions, weighted
	socket    string        // auto, raw or udp
	count     int           // at most this many distinct hellos; 0: rate × duration

	mix  []floodShare
	dst  *net.UDPAddr
	json bool
}

type floodShare struct {
	version string
	weight  int
}

func (f *floodOptions) register(fs *flag.FlagSet) {
	fs.Float64Var(&f.rate, "flood", 0, "flood mode: send this many spoofed ClientHellos per second to the loopback --server for --duration, each from a new source address and port, never answering the cookie")
	fs.IntVar(&f.repeat, "flood-repeat", 1, "flood: send each ClientHello this many times (1..100)")
	fs.DurationVar(&f.repeatGap, "flood-repeat-gap", 0, "flood: time between two sends of one ClientHello; 0: back to back")
	fs.StringVar(&f.mixSpec, "flood-mix", "1.3=1,1.2=1", "flood: DTLS versions of the ClientHellos, weighted (1.3, 1.2)")
	fs.StringVar(&f.socket, "flood-socket", "auto", "flood: raw (root: IP_HDRINCL, spoofed sources in 127.0.0.0/8), udp (a UDP socket per hello on a random 127.0.0.0/8 address) or auto (raw as root)")
	fs.IntVar(&f.count, "flood-count", 0, "flood: stop after this many distinct ClientHellos; 0: rate × duration")
}

// validate checks the flood flags and that server is an IPv4 loopback
// address: the flood never leaves the machine.
func (f *floodOptions) validate(server string, duration time.Duration) error {
	switch {
	case f.rate < 0 || f.rate > 1_000_000:
		return fmt.Errorf("--flood must be 0..1000000 ClientHellos per second")
	case duration <= 0 || duration > time.Hour:
		return fmt.Errorf("--flood needs --duration 0..1h")
	case f.repeat < 1 || f.repeat > 100:
		return fmt.Errorf("--flood-repeat must be 1..100")
	case f.repeatGap < 0 || f.repeatGap > 10*time.Second:
		return fmt.Errorf("--flood-repeat-gap must be 0..10s")
	case f.count < 0:
		return fmt.Errorf("--flood-count must be >= 0")
	case f.socket != "auto" && f.socket != "raw" && f.socket != "udp":
		return fmt.Errorf("--flood-socket %q: want auto, raw or udp", f.socket)
	}
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return fmt.Errorf("--server %q: %v", server, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() == nil || !ip.IsLoopback() {
		return fmt.Errorf("--flood needs an IPv4 loopback --server (an address in 127.0.0.0/8), not %q: the flood never leaves this machine", server)
	}
	if f.dst, err = net.ResolveUDPAddr("udp4", server); err != nil || f.dst.Port == 0 {
		return fmt.Errorf("--server %q: want 127.x.y.z:PORT", server)
	}
	shares, err := parseShares(f.mixSpec, func(n string) bool { return n == "1.3" || n == "1.2" })
	if err != nil {
		return fmt.Errorf("--flood-mix: %w (versions: 1.3, 1.2)", err)
	}
	f.mix = nil
	for _, s := range shares {
		if s.weight > 0 {
			f.mix = append(f.mix, floodShare{s.name, s.weight})
		}
	}
	if f.count == 0 {
		f.count = int(f.rate * duration.Seconds())
	}
	return nil
}

// floodSummary is what a flood run reports; --json prints it as is.
type floodSummary struct {
	Target      string  `json:"target"`
	Socket      string  `json:"socket"` // raw or udp
	RateWanted  float64 `json:"rate_wanted_per_s"`
	Repeat      int     `json:"repeat"`
	RepeatGapMS float64 `json:"repeat_gap_ms"`
	DurationS   float64 `json:"duration_s"`
	Hellos      int64   `json:"hellos"`    // distinct ClientHellos
	Datagrams   int64   `json:"datagrams"` // sent, repeats included
	Errors      int64   `json:"send_errors"`
	// RepeatsNotSent counts repeats (--flood-repeat-gap) that were due
	// after --duration: the run stops on time.
	RepeatsNotSent int64            `json:"repeats_not_sent"`
	FirstError     string           `json:"first_error,omitempty"`
	HellosPerS     float64          `json:"hellos_per_s"`
	DgramsPerS     float64          `json:"datagrams_per_s"`
	ByVersion      map[string]int64 `json:"by_version"`
	SourceAddrs    string           `json:"source_addresses"`
}

// floodSender sends one datagram from a source it chooses; a new source
// per hello, the same for its repeats.
type floodSender interface {
	// open picks a fresh source for one hello.
	open() (floodSource, error)
	close() error
}

type floodSource interface {
	send(payload []byte) error
	close()
}

// runFlood runs the flood and prints its summary.
func runFlood(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	f := &o.flood
	f.json = o.json
	s, err := flood(ctx, f, o.duration, stderr)
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	fmt.Fprintf(stdout, "flood       %s (%s socket): %d ClientHellos × %d in %.2fs = %.0f hellos/s (wanted %.0f), %.0f datagrams/s\n",
		s.Target, s.Socket, s.Hellos, s.Repeat, s.DurationS, s.HellosPerS, s.RateWanted, s.DgramsPerS)
	fmt.Fprintf(stdout, "            versions %v, sources %s, repeats not sent (due after the end) %d, send errors %d %s\n",
		s.ByVersion, s.SourceAddrs, s.RepeatsNotSent, s.Errors, s.FirstError)
	return nil
}

// flood sends f.count ClientHellos at f.rate for at most duration.
func flood(ctx context.Context, f *floodOptions, duration time.Duration, stderr io.Writer) (*floodSummary, error) {
	templates := make(map[string]*helloTemplate)
	for _, sh := range f.mix {
		t, err := captureHello(sh.version)
		if err != nil {
			return nil, err
		}
		templates[sh.version] = t
	}
	kind := f.socket
	if kind == "auto" {
		kind = "udp"
		if os.Geteuid() == 0 {
			kind = "raw"
		}
	}
	var sender floodSender
	var err error
	switch kind {
	case "raw":
		sender, err = newRawSender(f.dst)
	default:
		sender = udpSender{dst: f.dst}
	}
	if err != nil {
		return nil, err
	}
	defer sender.close()

	s := &floodSummary{
		Target: f.dst.String(), Socket: kind, RateWanted: f.rate, Repeat: f.repeat,
		RepeatGapMS: float64(f.repeatGap) / float64(time.Millisecond), ByVersion: make(map[string]int64),
		SourceAddrs: "127.0.0.0/8, a new address and port per ClientHello",
	}
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	fill := func(b []byte) {
		for i := 0; i < len(b); i += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], rng.Uint64())
			copy(b[i:], w[:])
		}
	}
	weights := make([]int, len(f.mix))
	for i, sh := range f.mix {
		weights[i] = sh.weight
	}
	versions := newWRR(weights)

	// Repeats sent later wait in a queue, oldest first (one gap for all).
	type later struct {
		src     floodSource
		payload []byte
		left    int
		due     time.Time
	}
	var queue []later
	sendOne := func(src floodSource, p []byte) {
		if err := src.send(p); err != nil {
			if s.Errors == 0 {
				s.FirstError = err.Error()
			}
			s.Errors++
			return
		}
		s.Datagrams++
	}

	fmt.Fprintf(stderr, "devsim: phase flood start: %.0f ClientHellos/s × %d to %s for %s (%s socket)\n", f.rate, f.repeat, f.dst, duration, kind)
	start := time.Now()
	end := start.Add(duration)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var buf []byte
	for stopped := false; (int(s.Hellos) < f.count || len(queue) > 0) && !stopped; {
		now := time.Now()
		// The last pass, at the end, sends what is still due: the run
		// sends rate × duration hellos, not one tick fewer.
		stopped = !now.Before(end)
		elapsed := min(now.Sub(start), end.Sub(start))
		for len(queue) > 0 && !queue[0].due.After(now) {
			q := &queue[0]
			sendOne(q.src, q.payload)
			if q.left--; q.left > 0 {
				q.due = now.Add(f.repeatGap)
				queue = append(queue, *q)
			} else {
				q.src.close()
			}
			queue = queue[1:]
		}
		due := min(int64(f.rate*elapsed.Seconds()), int64(f.count)) - s.Hellos
		for ; due > 0; due-- {
			version := f.mix[versions.next()].version
			buf = templates[version].build(buf, fill)
			src, err := sender.open()
			if err != nil {
				if s.Errors == 0 {
					s.FirstError = err.Error()
				}
				s.Errors++
				s.Hellos++ // counted as attempted: the bound holds even if opening fails
				continue
			}
			s.Hellos++
			s.ByVersion[version]++
			sendOne(src, buf)
			switch {
			case f.repeat == 1:
				src.close()
			case f.repeatGap == 0:
				for range f.repeat - 1 {
					sendOne(src, buf)
				}
				src.close()
			default:
				queue = append(queue, later{src: src, payload: append([]byte(nil), buf...), left: f.repeat - 1, due: now.Add(f.repeatGap)})
			}
		}
		if stopped {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			stopped = true
		}
	}
	// Repeats still due within the run are sent; the rest are dropped with
	// their sockets, so the run stays bounded.
	for _, q := range queue {
		s.RepeatsNotSent += int64(q.left)
		q.src.close()
	}
	elapsed := time.Since(start)
	s.DurationS = round(elapsed.Seconds(), 3)
	s.HellosPerS = perSecond(s.Hellos, elapsed)
	s.DgramsPerS = perSecond(s.Datagrams, elapsed)
	fmt.Fprintf(stderr, "devsim: phase flood done: %d ClientHellos, %d datagrams, %d errors, %.2fs\n", s.Hellos, s.Datagrams, s.Errors, elapsed.Seconds())
	return s, nil
}
