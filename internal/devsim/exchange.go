package devsim

import (
	"context"
	crand "crypto/rand"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Transmission parameters of RFC 7252 §4.8.
const (
	// DefaultACKTimeout is ACK_TIMEOUT.
	DefaultACKTimeout = 2 * time.Second
	// DefaultMaxRetransmit is MAX_RETRANSMIT.
	DefaultMaxRetransmit = 4
	ackRandomFactor      = 1.5
	// exchangeLifetime is EXCHANGE_LIFETIME (§4.8.2), how long a Message ID
	// is remembered for deduplication.
	exchangeLifetime = 247 * time.Second
	// maxSeen bounds the deduplication cache, whatever the lifetime.
	maxSeen = 8192
)

// peerMID names a message: Message IDs are scoped by peer (RFC 7252 §4.4).
type peerMID struct {
	peer string
	mid  uint16
}

type result struct {
	msg message.Message
	err error
}

// pending is one outgoing message waiting for its ACK and, for a request,
// its response.
type pending struct {
	key          peerMID
	token        string
	wantResponse bool
	acked        chan struct{} // closed by an Empty ACK (separate response follows)
	isAcked      bool
	done         chan result // buffered: written once, by whoever removes p
}

type seenEntry struct {
	at    time.Time
	reply []byte // what was answered; nil if nothing
}

// exchanger is the message layer shared by Device (one peer, named "") and
// Backend (peers named by address): confirmable retransmission, response
// matching by Message ID and token, and deduplication of what it receives.
// It is safe for concurrent use.
type exchanger struct {
	ackTimeout    time.Duration
	maxRetransmit int
	// newTimer makes the retransmission timers; tests replace it to drive
	// time themselves.
	newTimer func(time.Duration) retransmitTimer

	mu      sync.Mutex
	nextMID uint16
	byMID   map[peerMID]*pending
	byToken map[string]*pending
	seen    map[peerMID]*seenEntry
	order   []peerMID // seen keys, oldest first
	closed  error
}

func newExchanger(ackTimeout time.Duration, maxRetransmit int) *exchanger {
	if ackTimeout <= 0 {
		ackTimeout = DefaultACKTimeout
	}
	maxRetransmit = max(maxRetransmit, 0)
	return &exchanger{
		ackTimeout:    ackTimeout,
		maxRetransmit: maxRetransmit,
		newTimer:      newRealTimer,
		nextMID:       uint16(rand.Uint32()), // RFC 7252 §4.4: start from a random value
		byMID:         make(map[peerMID]*pending),
		byToken:       make(map[string]*pending),
		seen:          make(map[peerMID]*seenEntry),
	}
}

// retransmitTimer is the part of *time.Timer the exchanger uses.
type retransmitTimer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(time.Duration) bool
}

type realTimer struct{ *time.Timer }

func newRealTimer(d time.Duration) retransmitTimer { return realTimer{time.NewTimer(d)} }

func (t realTimer) C() <-chan time.Time { return t.Timer.C }

// mid returns a fresh Message ID.
func (e *exchanger) mid() int32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nextMID++
	return int32(e.nextMID)
}

// newToken returns a random 8-byte token (RFC 7252 §5.3.1).
func newToken() message.Token {
	t := make(message.Token, 8)
	_, _ = crand.Read(t) // crypto/rand.Read never fails
	return t
}

// roundTrip sends m to peer and waits: for a request, for its response
// (piggybacked or separate); for a confirmable response such as a Notify,
// for its ACK. Unset Type means Confirmable; a negative MessageID or, for a
// request, an empty token is filled in. Confirmable messages are
// retransmitted with exponential back-off (RFC 7252 §4.2).
func (e *exchanger) roundTrip(ctx context.Context, peer string, send func([]byte) error, m message.Message) (message.Message, error) {
	if m.Type == message.Unset {
		m.Type = message.Confirmable
	}
	wantResponse := isRequest(m.Code)
	if wantResponse && len(m.Token) == 0 {
		m.Token = newToken()
	}

	e.mu.Lock()
	if e.closed != nil {
		e.mu.Unlock()
		return message.Message{}, e.closed
	}
	if m.MessageID < 0 {
		e.nextMID++
		m.MessageID = int32(e.nextMID)
	}
	p := &pending{
		key:          peerMID{peer, uint16(m.MessageID)},
		token:        string(m.Token),
		wantResponse: wantResponse,
		acked:        make(chan struct{}),
		done:         make(chan result, 1),
	}
	e.byMID[p.key] = p
	if wantResponse {
		e.byToken[p.token] = p
	}
	e.mu.Unlock()
	defer e.forget(p)

	raw, err := encode(m)
	if err != nil {
		return message.Message{}, err
	}
	if err := send(raw); err != nil {
		return message.Message{}, err
	}
	if m.Type != message.Confirmable && !wantResponse {
		return message.Message{}, nil
	}

	var timeoutC <-chan time.Time
	ackedC := p.acked
	timeout := time.Duration(float64(e.ackTimeout) * (1 + (ackRandomFactor-1)*rand.Float64()))
	if m.Type == message.Confirmable {
		timer := e.newTimer(timeout)
		defer timer.Stop()
		timeoutC = timer.C()
		for retransmits := 0; ; {
			select {
			case r := <-p.done:
				return r.msg, r.err
			case <-ackedC:
				// Empty ACK: stop retransmitting, the response comes separately (§5.2.2).
				timer.Stop()
				ackedC, timeoutC = nil, nil
			case <-timeoutC:
				if retransmits == e.maxRetransmit {
					return message.Message{}, ErrTimeout
				}
				retransmits++
				timeout *= 2
				if err := send(raw); err != nil {
					return message.Message{}, err
				}
				timer.Reset(timeout)
			case <-ctx.Done():
				return message.Message{}, ctx.Err()
			}
		}
	}
	select {
	case r := <-p.done:
		return r.msg, r.err
	case <-ctx.Done():
		return message.Message{}, ctx.Err()
	}
}

// forget removes p from the tables if it is still there.
func (e *exchanger) forget(p *pending) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.byMID[p.key] == p {
		delete(e.byMID, p.key)
	}
	if e.byToken[p.token] == p {
		delete(e.byToken, p.token)
	}
}

// finish removes p and hands it r. The caller holds e.mu.
func (e *exchanger) finish(p *pending, r result) {
	if e.byMID[p.key] == p {
		delete(e.byMID, p.key)
	}
	if p.wantResponse && e.byToken[p.token] == p {
		delete(e.byToken, p.token)
	}
	select {
	case p.done <- r:
	default:
	}
}

// close fails every pending exchange with err and refuses new ones.
func (e *exchanger) close(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed != nil {
		return
	}
	e.closed = err
	e.failLocked(err)
}

// failPending fails every pending exchange with err; new ones may start
// (a Device whose session was lost can start another).
func (e *exchanger) failPending(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failLocked(err)
}

// failLocked fails every pending exchange. The caller holds e.mu.
func (e *exchanger) failLocked(err error) {
	for _, p := range e.byMID {
		e.finish(p, result{err: err})
	}
	for _, p := range e.byToken {
		e.finish(p, result{err: err})
	}
}

// reset forgets everything, as a rebooted device does: pending exchanges
// fail with err, the deduplication cache is emptied and Message IDs start
// again from a random value.
func (e *exchanger) reset(err error) {
	e.failPending(err)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen = make(map[peerMID]*seenEntry)
	e.order = nil
	e.nextMID = uint16(rand.Uint32())
}

// handler answers a request; ok false means no answer (only for NON).
type handler func(req message.Message) (resp message.Message, ok bool)

// receive processes one datagram m from peer: ACK and RST complete pending
// exchanges; requests go to serve and are answered piggybacked (CON) or with
// a NON response (NON); responses are matched by token to a pending request
// or, failing that, offered to unmatched (observations), then acknowledged,
// or rejected with RST if nobody wanted them. A CON or NON seen before from
// the same peer with the same Message ID is a duplicate (RFC 7252 §4.5): a
// CON duplicate gets the very same answer again, a NON duplicate nothing.
func (e *exchanger) receive(peer string, m message.Message, reply func([]byte) error, serve handler, unmatched func(message.Message) bool) {
	key := peerMID{peer, uint16(m.MessageID)}
	switch m.Type {
	case message.Acknowledgement, message.Reset:
		e.mu.Lock()
		defer e.mu.Unlock()
		p := e.byMID[key]
		switch {
		case p == nil: // late or duplicate ACK
		case m.Type == message.Reset:
			e.finish(p, result{err: ErrReset})
		case m.Code == codes.Empty && !p.wantResponse:
			e.finish(p, result{})
		case m.Code == codes.Empty:
			delete(e.byMID, key)
			if !p.isAcked {
				p.isAcked = true
				close(p.acked)
			}
		case p.wantResponse && string(m.Token) == p.token && isResponse(m.Code):
			e.finish(p, result{msg: m})
		}
		return
	case message.Confirmable, message.NonConfirmable:
	default:
		return
	}

	e.mu.Lock()
	if s, dup := e.seen[key]; dup {
		again := s.reply
		e.mu.Unlock()
		if m.Type == message.Confirmable && again != nil {
			_ = reply(again)
		}
		return
	}
	entry := e.remember(key)
	e.mu.Unlock()

	var out []byte
	switch {
	case isRequest(m.Code):
		resp, ok := serve(m)
		if !ok && m.Type == message.Confirmable {
			out = emptyMessage(message.Acknowledgement, m.MessageID)
			break
		}
		if !ok {
			break
		}
		resp.Token = m.Token
		resp.Type, resp.MessageID = message.Acknowledgement, m.MessageID
		if m.Type == message.NonConfirmable {
			resp.Type, resp.MessageID = message.NonConfirmable, e.mid()
		}
		var err error
		if out, err = encode(resp); err != nil {
			out = nil
		}
	case isResponse(m.Code):
		matched := e.deliver(peer, m)
		if !matched && unmatched != nil {
			matched = unmatched(m)
		}
		switch {
		case !matched:
			out = emptyMessage(message.Reset, m.MessageID)
		case m.Type == message.Confirmable:
			out = emptyMessage(message.Acknowledgement, m.MessageID)
		}
	case m.Type == message.Confirmable:
		// CoAP ping (Empty CON, §4.3) or a code of a reserved class: Reset.
		out = emptyMessage(message.Reset, m.MessageID)
	}

	e.mu.Lock()
	entry.reply = out
	e.mu.Unlock()
	if out != nil {
		_ = reply(out)
	}
}

// deliver hands a separate response to the request with its token.
func (e *exchanger) deliver(peer string, m message.Message) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.byToken[string(m.Token)]
	if p == nil || p.key.peer != peer {
		return false
	}
	e.finish(p, result{msg: m})
	return true
}

// remember records key as seen and expires old entries. The caller holds e.mu.
func (e *exchanger) remember(key peerMID) *seenEntry {
	now := time.Now()
	for len(e.order) > 0 {
		old := e.seen[e.order[0]]
		if len(e.order) < maxSeen && now.Sub(old.at) < exchangeLifetime {
			break
		}
		delete(e.seen, e.order[0])
		e.order = e.order[1:]
	}
	s := &seenEntry{at: now}
	e.seen[key] = s
	e.order = append(e.order, key)
	return s
}
