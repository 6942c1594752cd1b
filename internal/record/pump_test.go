package record

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// opened is what the pump saw in one datagram.
type opened struct {
	payloads    [][]byte
	keysChanged bool
	closed      bool
	replies     int
	err         error
}

// startPump plays the server in the background: every client datagram goes
// through Open (real clock), replies go back, and Poll runs every 20 ms.
// drop, if set, may discard client datagrams before Open.
func (ss *session) startPump(drop func(b []byte) bool) <-chan opened {
	out := make(chan opened, 1024)
	done := make(chan struct{})
	stopped := make(chan struct{})
	var once sync.Once
	ss.stopPump = func() { once.Do(func() { close(done); <-stopped }) }
	ss.t.Cleanup(ss.stopPump)
	go func() {
		defer close(stopped)
		var d Datagram
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				for _, r := range ss.getConn().Poll(time.Now()) {
					ss.toClient(r)
				}
			case b := <-ss.pipe.server.in:
				if drop != nil && drop(b) {
					continue
				}
				err := ss.getConn().Open(&d, b, time.Now())
				for _, r := range d.Replies {
					ss.toClient(r)
				}
				o := opened{keysChanged: d.KeysChanged, closed: d.Closed, replies: len(d.Replies), err: err}
				for _, p := range d.Payloads {
					o.payloads = append(o.payloads, bytes.Clone(p))
				}
				select {
				case out <- o:
				case <-done:
					return
				}
			}
		}
	}()
	return out
}

// await returns the next pump result satisfying ok.
func await(t testing.TB, ch <-chan opened, what string, ok func(opened) bool) opened {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case o := <-ch:
			if ok(o) {
				return o
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// roundTrip checks one payload each way through a running pump.
func (ss *session) roundTrip(ch <-chan opened, tag string) {
	ss.t.Helper()
	up := []byte("up " + tag)
	if _, err := ss.client.Write(up); err != nil {
		ss.t.Fatal(err)
	}
	await(ss.t, ch, "payload "+tag, func(o opened) bool {
		return len(o.payloads) == 1 && bytes.Equal(o.payloads[0], up)
	})
	down := []byte("down " + tag)
	rec, err := ss.conn.Seal(nil, down)
	if err != nil {
		ss.t.Fatal(err)
	}
	ss.toClient(rec)
	if got := ss.clientRead(); !bytes.Equal(got, down) {
		ss.t.Fatalf("client read %q, want %q", got, down)
	}
}
