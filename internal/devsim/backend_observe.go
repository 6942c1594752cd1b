package devsim

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"go.uber.org/zap"
)

// observer is one observation the backend established (RFC 7641).
type observer struct {
	ep, path string
	ch       chan []byte
	ended    bool
	hasSeq   bool
	seq      uint32
	at       time.Time
}

// fresh reports whether a notification with Observe value v, received at
// now, is newer than the last one (RFC 7641 §3.4), and records it if so.
func (o *observer) fresh(v uint32, now time.Time) bool {
	const half = 1 << 23
	v1, t1 := o.seq, o.at
	if o.hasSeq && !(v1 < v && v-v1 < half) && !(v1 > v && v1-v > half) && !now.After(t1.Add(128*time.Second)) {
		return false
	}
	o.hasSeq, o.seq, o.at = true, v, now
	return true
}

// end closes the channel once. The caller holds Backend.mu.
func (o *observer) end() {
	if !o.ended {
		o.ended = true
		close(o.ch)
	}
}

// observeBuffer is how many notifications an observation channel holds;
// further ones are dropped until the reader catches up.
const observeBuffer = 64

// Observe sends GET Observe=0 for path to ep and, once the device answers
// 2.05 Content with an Observe option, returns a channel that receives the
// payload of every later notification, stale ones (RFC 7641 §3.4) dropped.
// The initial response's payload is not sent on the channel (use Read). ctx
// bounds only the establishment. The channel is closed when the device
// ends the observation (a response without Observe, or an error code) and
// when the backend closes. Confirmable notifications are acknowledged.
func (b *Backend) Observe(ctx context.Context, ep, path string) (<-chan []byte, error) {
	addr, err := b.addrOf(ep)
	if err != nil {
		return nil, err
	}
	token := newToken()
	o := &observer{ep: ep, path: path, ch: make(chan []byte, observeBuffer)}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	b.observations[string(token)] = o
	b.mu.Unlock()

	m := message.Message{Type: message.Confirmable, Code: codes.GET, MessageID: -1, Token: token}
	m.Options = withUint(m.Options, message.Observe, 0)
	m.Options = withPath(m.Options, message.URIPath, path)
	resp, err := b.ex.roundTrip(ctx, addr.String(), b.sendTo(addr), m)
	seq, observing := observeValue(resp)
	if err == nil && resp.Code != codes.Content {
		err = &CodeError{Op: "observe " + path, Code: resp.Code, Want: codes.Content}
	} else if err == nil && !observing {
		err = fmt.Errorf("devsim: observe %s %s: %w", ep, path, ErrNotObservable)
	} else if err != nil {
		err = fmt.Errorf("devsim: observe %s %s: %w", ep, path, err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		if b.observations[string(token)] == o {
			delete(b.observations, string(token))
		}
		return nil, err
	}
	if !o.hasSeq {
		o.fresh(seq, time.Now())
	}
	return o.ch, nil
}

// notification handles a response whose token matches no pending request:
// a notification of an observation. It reports whether the token was known
// (unknown ones get a Reset, which cancels the observation at the device).
func (b *Backend) notification(m message.Message) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	o := b.observations[string(m.Token)]
	if o == nil || o.ended {
		return false
	}
	seq, observing := observeValue(m)
	if m.Code == codes.Content && observing {
		if !o.fresh(seq, time.Now()) {
			b.log.Debug("dropping stale notification", zap.String("endpoint", o.ep), zap.String("path", o.path))
			return true
		}
		select {
		case o.ch <- slices.Clone(m.Payload):
		default:
			b.log.Debug("observation channel full, dropping notification", zap.String("endpoint", o.ep), zap.String("path", o.path))
		}
		return true
	}
	// A final response without Observe, or an error: the observation is over
	// (RFC 7641 §3.2, §4.2).
	if m.Code == codes.Content {
		select {
		case o.ch <- slices.Clone(m.Payload):
		default:
		}
	}
	o.end()
	delete(b.observations, string(m.Token))
	return true
}
