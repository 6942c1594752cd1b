package devsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"go.uber.org/zap"
)

// Backend is a minimal LwM2M server on plain CoAP over UDP: the registration
// interface (Register, Update, De-register), Bootstrap-Request and Send from
// devices, and Read and Observe towards them. NewBackend binds the socket and
// starts the goroutine that serves it; Close stops it. Methods are safe for
// concurrent use.
//
// Registrations never expire. Retransmitted confirmable messages are
// recognized by (source address, Message ID) and answered with the very
// same bytes (RFC 7252 §4.5).
type Backend struct {
	conn *net.UDPConn
	log  *zap.Logger
	ex   *exchanger

	mu           sync.Mutex
	regs         map[string]*Registration // by location, e.g. "/rd/5a3f"
	received     []Received
	onEvent      func(Event)
	changed      chan struct{} // closed and replaced when regs change
	observations map[string]*observer
	closed       bool

	readerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error
}

// Received is one request the backend received (duplicates excluded).
type Received struct {
	Type      message.Type
	Code      codes.Code
	MessageID uint16
	Token     []byte
	Path      string   // "/rd/5a3f"
	Query     []string // ["ep=dev1", "lt=3600"]
	Payload   []byte
	From      net.Addr
	At        time.Time
}

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	EventRegistered EventKind = iota + 1
	EventUpdated
	EventDeregistered
	EventBootstrapRequested
	EventSent
)

func (k EventKind) String() string {
	switch k {
	case EventRegistered:
		return "registered"
	case EventUpdated:
		return "updated"
	case EventDeregistered:
		return "deregistered"
	case EventBootstrapRequested:
		return "bootstrap-requested"
	case EventSent:
		return "sent"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports a successful LwM2M operation of a device.
type Event struct {
	Kind     EventKind
	Endpoint string
	// Registration is the registration after the operation (before it, for
	// EventDeregistered); zero for a Bootstrap-Request, and for a Send from
	// an address with no registration.
	Registration Registration
	Payload      []byte // the Send payload
	From         net.Addr
	At           time.Time
}

// NewBackend binds a UDP socket on addr (e.g. "127.0.0.1:0") and starts
// serving it in a goroutine. logger may be nil.
func NewBackend(addr string, logger *zap.Logger) (*Backend, error) {
	uaddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("devsim: backend address %q: %w", addr, err)
	}
	conn, err := net.ListenUDP("udp", uaddr)
	if err != nil {
		return nil, fmt.Errorf("devsim: backend: %w", err)
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	b := &Backend{
		conn:         conn,
		log:          logger,
		ex:           newExchanger(DefaultACKTimeout, DefaultMaxRetransmit),
		regs:         make(map[string]*Registration),
		changed:      make(chan struct{}),
		observations: make(map[string]*observer),
		readerDone:   make(chan struct{}),
	}
	go b.readLoop()
	return b, nil
}

// Addr returns the address the backend listens on.
func (b *Backend) Addr() net.Addr { return b.conn.LocalAddr() }

// OnEvent sets a hook called, from the serving goroutine, after every
// successful device operation. It must not block for long. nil removes it.
func (b *Backend) OnEvent(fn func(Event)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onEvent = fn
}

// Received returns every distinct request received so far, oldest first.
func (b *Backend) Received() []Received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.received)
}

// Close stops serving, closes the socket, fails pending Read and Observe
// calls with ErrClosed and closes every observation channel. Idempotent.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		close(b.changed)
		b.mu.Unlock()
		b.ex.close(ErrClosed)
		b.closeErr = b.conn.Close()
		<-b.readerDone
		b.mu.Lock()
		for token, o := range b.observations {
			o.end()
			delete(b.observations, token)
		}
		b.mu.Unlock()
	})
	return b.closeErr
}

func (b *Backend) readLoop() {
	defer close(b.readerDone)
	buf := make([]byte, 64*1024)
	for {
		n, from, err := b.conn.ReadFromUDP(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			b.log.Debug("backend read", zap.Error(err))
			continue
		}
		m, err := decode(buf[:n])
		if err != nil {
			b.log.Debug("dropping malformed coap message", zap.Stringer("remote", from), zap.Error(err))
			continue
		}
		b.ex.receive(from.String(), m, b.sendTo(from), func(req message.Message) (message.Message, bool) {
			return b.serve(from, req)
		}, b.notification)
	}
}

func (b *Backend) sendTo(addr *net.UDPAddr) func([]byte) error {
	return func(raw []byte) error {
		_, err := b.conn.WriteToUDP(raw, addr)
		return err
	}
}

// emit calls the event hook, if any, outside b.mu.
func (b *Backend) emit(ev *Event) {
	if ev == nil {
		return
	}
	b.mu.Lock()
	fn := b.onEvent
	b.mu.Unlock()
	b.log.Debug("lwm2m event", zap.Stringer("event", ev.Kind), zap.String("endpoint", ev.Endpoint), zap.Stringer("remote", ev.From))
	if fn != nil {
		fn(*ev)
	}
}

// addrOf returns the address of ep's registration.
func (b *Backend) addrOf(ep string) (*net.UDPAddr, error) {
	reg, ok := b.Registration(ep)
	if !ok {
		return nil, fmt.Errorf("%w: endpoint %q", ErrNotRegistered, ep)
	}
	addr, ok := reg.Addr.(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("devsim: endpoint %q: address %v is not UDP", ep, reg.Addr)
	}
	return addr, nil
}

// Read sends a CON GET for path to ep's registration address and returns
// the payload of the 2.05 Content response; any other code is a *CodeError.
func (b *Backend) Read(ctx context.Context, ep, path string) ([]byte, error) {
	addr, err := b.addrOf(ep)
	if err != nil {
		return nil, err
	}
	m := message.Message{Type: message.Confirmable, Code: codes.GET, MessageID: -1}
	m.Options = withPath(m.Options, message.URIPath, path)
	resp, err := b.ex.roundTrip(ctx, addr.String(), b.sendTo(addr), m)
	if err != nil {
		return nil, fmt.Errorf("devsim: read %s %s: %w", ep, path, err)
	}
	if resp.Code != codes.Content {
		return nil, &CodeError{Op: "read " + path, Code: resp.Code, Want: codes.Content}
	}
	return resp.Payload, nil
}
