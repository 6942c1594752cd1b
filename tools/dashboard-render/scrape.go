package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// scrape fetches url (Prometheus text format) and returns its samples keyed
// by series, with the job and instance labels Prometheus would attach.
func scrape(ctx context.Context, url, job, instance string) (map[string]elem, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseExposition(resp.Body, labels{"job": job, "instance": instance})
}

// parseExposition reads the Prometheus text exposition format: one sample a
// line, "name{label="value",...} value [timestamp]"; comments skipped.
func parseExposition(r io.Reader, extra labels) (map[string]elem, error) {
	out := map[string]elem{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		l := labels{}
		for k, v := range extra {
			l[k] = v
		}
		i := strings.IndexAny(line, "{ ")
		if i < 0 {
			return nil, fmt.Errorf("line %d: no value", n)
		}
		l["__name__"] = line[:i]
		rest := line[i:]
		if rest[0] == '{' {
			j := 1
			for {
				for j < len(rest) && (rest[j] == ' ' || rest[j] == ',') {
					j++
				}
				if j >= len(rest) {
					return nil, fmt.Errorf("line %d: unterminated labels", n)
				}
				if rest[j] == '}' {
					j++
					break
				}
				eq := strings.IndexByte(rest[j:], '=')
				if eq < 0 || j+eq+1 >= len(rest) || rest[j+eq+1] != '"' {
					return nil, fmt.Errorf("line %d: bad label", n)
				}
				name := rest[j : j+eq]
				k := j + eq + 2
				var val strings.Builder
				for ; k < len(rest) && rest[k] != '"'; k++ {
					if rest[k] == '\\' && k+1 < len(rest) {
						k++
						switch rest[k] {
						case 'n':
							val.WriteByte('\n')
						default:
							val.WriteByte(rest[k])
						}
						continue
					}
					val.WriteByte(rest[k])
				}
				if k >= len(rest) {
					return nil, fmt.Errorf("line %d: unterminated label value", n)
				}
				l[name] = val.String()
				j = k + 1
			}
			rest = rest[j:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("line %d: no value", n)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
		out[l.key()] = elem{labels: l, value: v}
	}
	return out, sc.Err()
}

// scrapeLoop scrapes every period until ctx ends or n periods have passed.
// A scrape that fails or takes longer than 5s leaves a gap, as in
// Prometheus; five failures in a row end the loop.
func scrapeLoop(ctx context.Context, url, job, instance string, period time.Duration, n int, h *history, progress func(int)) error {
	tick := time.NewTicker(period)
	defer tick.Stop()
	failed := 0
	for i := 0; i < n; i++ {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := scrape(sctx, url, job, instance)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			if failed++; failed == 5 {
				return err
			}
			logf("scrape failed, gap in the data: %v", err)
		default:
			failed = 0
			h.times = append(h.times, time.Now())
			h.samples = append(h.samples, s)
		}
		if progress != nil {
			progress(i)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	if len(h.times) < 2 {
		return errors.New("fewer than two scrapes")
	}
	return nil
}

// dumpScrapes writes the gateway_* samples of every scrape, one per line:
// seconds since the first scrape, series, value.
func dumpScrapes(path string, h *history) error {
	var b strings.Builder
	for i, s := range h.samples {
		keys := make([]string, 0, len(s))
		for k, e := range s {
			if strings.HasPrefix(e.labels["__name__"], "gateway_") {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			e := s[k]
			fmt.Fprintf(&b, "%6.1f %s%s %g\n", h.times[i].Sub(h.times[0]).Seconds(), e.labels["__name__"],
				e.labels.without("__name__", "job", "instance").key(), e.value)
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
