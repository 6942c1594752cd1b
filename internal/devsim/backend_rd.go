package devsim

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Registration is what the backend knows of a registered device.
type Registration struct {
	Endpoint     string
	Location     string        // "/rd/5a3f"
	Lifetime     time.Duration // lt; 86400s when the device sent none
	Binding      string        // b; "U" when the device sent none
	Version      string        // lwm2m, e.g. "1.1"
	Links        string        // the Register (or latest Update) payload
	Addr         net.Addr      // source of the Register or latest Update
	RegisteredAt time.Time
	UpdatedAt    time.Time
	Updates      int
}

// Registrations returns the current registrations, oldest first.
func (b *Backend) Registrations() []Registration {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Registration, 0, len(b.regs))
	for _, r := range b.regs {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(x, y Registration) int {
		return cmp.Or(x.RegisteredAt.Compare(y.RegisteredAt), cmp.Compare(x.Endpoint, y.Endpoint))
	})
	return out
}

// Registration returns ep's current registration.
func (b *Backend) Registration(ep string) (Registration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r := b.byEndpoint(ep); r != nil {
		return *r, true
	}
	return Registration{}, false
}

// WaitRegistration waits until ep is registered and returns its registration.
func (b *Backend) WaitRegistration(ctx context.Context, ep string) (Registration, error) {
	for {
		b.mu.Lock()
		if r := b.byEndpoint(ep); r != nil {
			reg := *r
			b.mu.Unlock()
			return reg, nil
		}
		if b.closed {
			b.mu.Unlock()
			return Registration{}, ErrClosed
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Registration{}, ctx.Err()
		}
	}
}

// Forget removes ep's registration without telling the device, as a
// server does whose registration expired or that lost its state: the
// device's next Update is answered 4.04 Not Found. It reports whether ep
// was registered.
func (b *Backend) Forget(ep string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.byEndpoint(ep)
	if r == nil {
		return false
	}
	delete(b.regs, r.Location)
	b.notifyChanged()
	return true
}

// byEndpoint finds ep's registration. The caller holds b.mu.
func (b *Backend) byEndpoint(ep string) *Registration {
	for _, r := range b.regs {
		if r.Endpoint == ep {
			return r
		}
	}
	return nil
}

// byAddr finds the registration whose address is from. The caller holds b.mu.
func (b *Backend) byAddr(from net.Addr) *Registration {
	for _, r := range b.regs {
		if r.Addr.String() == from.String() {
			return r
		}
	}
	return nil
}

// notifyChanged wakes WaitRegistration callers. The caller holds b.mu.
func (b *Backend) notifyChanged() {
	if !b.closed {
		close(b.changed)
		b.changed = make(chan struct{})
	}
}

// serve answers a device request (LwM2M 1.1 transport §6): the
// registration interface under /rd, Bootstrap-Request at /bs, Send at /dp.
func (b *Backend) serve(from *net.UDPAddr, req message.Message) (message.Message, bool) {
	path := joinPath(req.Options, message.URIPath)
	q := queries(req.Options)
	now := time.Now()
	b.mu.Lock()
	b.received = append(b.received, Received{
		Type: req.Type, Code: req.Code, MessageID: uint16(req.MessageID), Token: slices.Clone(req.Token),
		Path: path, Query: q, Payload: slices.Clone(req.Payload), From: from, At: now,
	})
	b.mu.Unlock()

	var (
		resp message.Message
		ev   *Event
	)
	isLocation := strings.HasPrefix(path, "/rd/") && strings.Count(path, "/") == 2
	switch {
	case path == "/rd" && req.Code == codes.POST:
		resp, ev = b.register(from, q, req.Payload, now)
	case isLocation && req.Code == codes.POST:
		resp, ev = b.update(from, path, q, req.Payload, now)
	case isLocation && req.Code == codes.DELETE:
		resp, ev = b.deregister(from, path, now)
	case path == "/bs" && req.Code == codes.POST:
		resp, ev = b.bootstrap(from, q, now)
	case path == "/dp" && req.Code == codes.POST:
		resp.Code = codes.Changed
		ev = &Event{Kind: EventSent, Payload: slices.Clone(req.Payload), From: from, At: now}
		b.mu.Lock()
		if r := b.byAddr(from); r != nil {
			ev.Endpoint, ev.Registration = r.Endpoint, *r
		}
		b.mu.Unlock()
	case path == "/rd" || path == "/bs" || path == "/dp":
		resp.Code = codes.MethodNotAllowed
	default:
		resp.Code = codes.NotFound
	}
	b.emit(ev)
	return resp, true
}

// register handles POST /rd?ep=..: a new registration replaces the
// endpoint's previous one.
func (b *Backend) register(from *net.UDPAddr, q []string, links []byte, now time.Time) (message.Message, *Event) {
	ep, ok := queryValue(q, "ep")
	if !ok || ep == "" {
		return message.Message{Code: codes.BadRequest}, nil
	}
	r := &Registration{Endpoint: ep, Lifetime: 86400 * time.Second, Binding: "U", Links: string(links), Addr: from, RegisteredAt: now, UpdatedAt: now}
	if !applyParams(r, q) {
		return message.Message{Code: codes.BadRequest}, nil
	}
	r.Version, _ = queryValue(q, "lwm2m")
	id := make([]byte, 4)
	_, _ = rand.Read(id) // crypto/rand.Read never fails
	r.Location = "/rd/" + hex.EncodeToString(id)

	b.mu.Lock()
	if old := b.byEndpoint(ep); old != nil {
		delete(b.regs, old.Location)
	}
	b.regs[r.Location] = r
	b.notifyChanged()
	ev := &Event{Kind: EventRegistered, Endpoint: ep, Registration: *r, From: from, At: now}
	b.mu.Unlock()

	resp := message.Message{Code: codes.Created}
	resp.Options = withPath(resp.Options, message.LocationPath, r.Location)
	return resp, ev
}

// update handles POST /rd/{id}: lifetime, binding and links may change, and
// the address becomes the request's source.
func (b *Backend) update(from *net.UDPAddr, loc string, q []string, links []byte, now time.Time) (message.Message, *Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.regs[loc]
	if r == nil {
		return message.Message{Code: codes.NotFound}, nil
	}
	next := *r
	if !applyParams(&next, q) {
		return message.Message{Code: codes.BadRequest}, nil
	}
	if len(links) > 0 {
		next.Links = string(links)
	}
	next.Addr, next.UpdatedAt = from, now
	next.Updates++
	*r = next
	b.notifyChanged()
	return message.Message{Code: codes.Changed}, &Event{Kind: EventUpdated, Endpoint: r.Endpoint, Registration: *r, From: from, At: now}
}

// deregister handles DELETE /rd/{id}.
func (b *Backend) deregister(from *net.UDPAddr, loc string, now time.Time) (message.Message, *Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.regs[loc]
	if r == nil {
		return message.Message{Code: codes.NotFound}, nil
	}
	delete(b.regs, loc)
	b.notifyChanged()
	return message.Message{Code: codes.Deleted}, &Event{Kind: EventDeregistered, Endpoint: r.Endpoint, Registration: *r, From: from, At: now}
}

// bootstrap handles POST /bs?ep=..: accepted and recorded, nothing more.
func (b *Backend) bootstrap(from *net.UDPAddr, q []string, now time.Time) (message.Message, *Event) {
	ep, ok := queryValue(q, "ep")
	if !ok || ep == "" {
		return message.Message{Code: codes.BadRequest}, nil
	}
	return message.Message{Code: codes.Changed}, &Event{Kind: EventBootstrapRequested, Endpoint: ep, From: from, At: now}
}

// applyParams applies the lt and b query parameters; false if lt is invalid.
func applyParams(r *Registration, q []string) bool {
	if lt, ok := queryValue(q, "lt"); ok {
		secs, err := strconv.ParseUint(lt, 10, 32)
		if err != nil {
			return false
		}
		r.Lifetime = time.Duration(secs) * time.Second
	}
	if binding, ok := queryValue(q, "b"); ok {
		r.Binding = binding
	}
	return true
}
