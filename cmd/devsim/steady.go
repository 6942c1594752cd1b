package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
)

// pick returns a connected device for the next message, round-robin, and
// counts the message in its in-flight requests; nil if none is connected.
func (r *runner) pick() (*slot, client) {
	n := uint64(len(r.slots))
	for range n {
		s := r.slots[r.cursor.Add(1)%n]
		s.mu.Lock()
		if s.state == stateUp {
			s.inflight++
			c := s.c
			s.mu.Unlock()
			return s, c
		}
		s.mu.Unlock()
	}
	return nil, nil
}

func (r *runner) nextOp() string {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	return r.o.pattern.ops[r.opSeq.next()]
}

// doOp runs one message on s's client c and records it. A client whose
// connection is gone is closed and its device marked down.
func (r *runner) doOp(ctx context.Context, s *slot, c client, op string) {
	octx, cancel := context.WithTimeout(ctx, r.o.timeout)
	t0 := time.Now()
	err := c.do(octx, op)
	cancel()
	r.st.op(op, time.Since(t0), err)
	// A session the gateway ended (and, with --auto-reconnect, could not
	// be set up again) leaves the device down.
	gone := errors.Is(err, errRawClosed) || errors.Is(err, devsim.ErrClosed) || errors.Is(err, devsim.ErrSessionLost)
	s.mu.Lock()
	s.inflight--
	if gone && s.c == c {
		r.setState(s, stateDown, nil)
	} else if gone {
		gone = false // someone else took the device over (churn): theirs to close
	}
	s.mu.Unlock()
	if gone {
		r.closeClient(ctx, c)
	}
}

// messages sends the message pattern until ctx ends or --messages were
// sent: --msg-rate per second over the whole fleet, or as fast as
// --inflight concurrent requests allow. When all --inflight workers are
// busy the next message waits (and counts as late) rather than being
// dropped. Requests in flight when it stops are waited for (each is bounded
// by --timeout).
func (r *runner) messages(ctx, opCtx context.Context) {
	rate := r.o.msgRate
	if r.o.msgMax {
		rate = 0
	}
	r.paced(ctx, int64(r.o.messages), rate, func() {
		s, c := r.pick()
		if s == nil {
			r.st.noDevice.Add(1)
			return
		}
		r.doOp(opCtx, s, c, r.nextOp())
	})
}

// wave sends one request of operation op from every device connected when
// it starts, in order, at --msg-rate (as fast as --inflight allows when
// --msg-rate is 0 or max): the warm-up and wake phases.
func (r *runner) wave(ctx, opCtx context.Context, op string) int64 {
	var up []*slot
	for _, s := range r.slots {
		s.mu.Lock()
		if s.state == stateUp {
			up = append(up, s)
		}
		s.mu.Unlock()
	}
	var next, sent atomic.Int64
	r.paced(ctx, int64(len(up)), r.o.msgRate, func() {
		i := next.Add(1) - 1
		if i >= int64(len(up)) {
			return
		}
		s := up[i]
		s.mu.Lock()
		if s.state != stateUp {
			s.mu.Unlock()
			r.st.noDevice.Add(1)
			return
		}
		s.inflight++
		c := s.c
		s.mu.Unlock()
		sent.Add(1)
		r.doOp(opCtx, s, c, op)
	})
	return sent.Load()
}

// paced calls work limit times (0: until ctx ends), rate times per second
// (0: as fast as --inflight workers allow), on at most --inflight workers.
// When every worker is busy the next call waits (and counts as late)
// rather than being dropped; calls in progress when it stops are waited for.
func (r *runner) paced(ctx context.Context, limit int64, rate float64, work func()) {
	tokens := make(chan struct{}) // unbuffered: a send succeeds only if a worker is idle
	var wg sync.WaitGroup
	for range r.o.inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range tokens {
				work()
			}
		}()
	}
	defer func() {
		close(tokens)
		wg.Wait()
	}()

	start := time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	issued := int64(0)
	for limit == 0 || issued < limit {
		if rate <= 0 {
			select {
			case tokens <- struct{}{}:
				issued++
			case <-ctx.Done():
				return
			}
			continue
		}
		due := int64(rate*time.Since(start).Seconds()) - issued
		if limit > 0 {
			due = min(due, limit-issued)
		}
		for ; due > 0; due-- {
			select {
			case tokens <- struct{}{}:
			default:
				// Every worker busy: wait for one, late; the rate is a cap
				// and --messages are all sent.
				r.st.late.Add(1)
				select {
				case tokens <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
			issued++
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// churn disconnects and reconnects --churn of the connected devices per
// second, choosing idle ones at random, until ctx ends.
func (r *runner) churn(ctx, opCtx context.Context) {
	const period = 100 * time.Millisecond
	tick := time.NewTicker(period)
	defer tick.Stop()
	acc := 0.0
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		acc += r.o.churn * float64(r.st.up.Load()) * period.Seconds()
		for ; acc >= 1; acc-- {
			s, c := r.pickIdle()
			if s == nil {
				acc = 0
				break
			}
			r.st.reconnects.Add(1)
			r.bg.Add(1)
			go func() {
				defer r.bg.Done()
				r.closeClient(opCtx, c)
				select {
				case r.connSem <- struct{}{}:
				case <-opCtx.Done():
					s.mu.Lock()
					r.setState(s, stateDown, nil)
					s.mu.Unlock()
					return
				}
				defer func() { <-r.connSem }()
				r.connect(opCtx, s, kindChurn, false)
			}()
		}
	}
}

// pickIdle chooses a random connected device without requests in flight
// and marks it connecting; a few tries, then nil.
func (r *runner) pickIdle() (*slot, client) {
	for range 16 {
		r.rngMu.Lock()
		s := r.slots[r.rng.IntN(len(r.slots))]
		r.rngMu.Unlock()
		s.mu.Lock()
		if s.state == stateUp && s.inflight == 0 {
			c := s.c
			r.setState(s, stateConnecting, nil)
			s.mu.Unlock()
			return s, c
		}
		s.mu.Unlock()
	}
	return nil, nil
}
