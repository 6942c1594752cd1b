package devsim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"go.uber.org/zap"
)

// Do sends req to the gateway and returns the response. An unset type means
// Confirmable; an unset Message ID and an empty token are filled in.
// Confirmable requests are retransmitted per RFC 7252 §4.2 (ACKTimeout,
// MaxRetransmit); the response may be piggybacked or separate. ctx bounds
// the whole exchange.
func (d *Device) Do(ctx context.Context, req *pool.Message) (*pool.Message, error) {
	if req.Type() == message.Unset {
		req.SetType(message.Confirmable)
	}
	if req.MessageID() < 0 {
		req.SetMessageID(d.ex.mid())
	}
	if len(req.Token()) == 0 {
		req.SetToken(newToken())
	}
	raw, err := req.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		return nil, fmt.Errorf("devsim: encode request: %w", err)
	}
	m, err := decode(raw)
	if err != nil {
		return nil, fmt.Errorf("devsim: encode request: %w", err)
	}
	resp, err := d.roundTrip(ctx, "do", m)
	if err != nil {
		return nil, err
	}
	if raw, err = encode(resp); err != nil {
		return nil, err
	}
	out := pool.NewMessage(ctx)
	if _, err := out.UnmarshalWithDecoder(coder.DefaultCoder, raw); err != nil {
		return nil, err
	}
	return out, nil
}

// request sends a confirmable request and checks the response code.
func (d *Device) request(ctx context.Context, op string, code codes.Code, path string, q []string, format *message.MediaType, payload []byte, want codes.Code) (message.Message, error) {
	m := message.Message{Type: message.Confirmable, Code: code, MessageID: -1, Payload: payload}
	m.Options = withPath(m.Options, message.URIPath, path)
	if format != nil {
		m.Options = withUint(m.Options, message.ContentFormat, uint32(*format))
	}
	for _, s := range q {
		m.Options = m.Options.Add(message.Option{ID: message.URIQuery, Value: []byte(s)})
	}
	resp, err := d.roundTrip(ctx, op, m)
	if err != nil {
		return resp, fmt.Errorf("devsim: %s: %w", op, err)
	}
	if resp.Code != want {
		return resp, &CodeError{Op: op, Code: resp.Code, Want: want}
	}
	return resp, nil
}

// Register sends the LwM2M Register operation (CON POST
// /rd?ep=..&lt=..&lwm2m=1.1&b=.. with the object instances in link format)
// and returns the location the server assigned, e.g. "/rd/5a3f". Anything
// but 2.01 Created is a *CodeError.
func (d *Device) Register(ctx context.Context) (string, error) {
	lifetime := d.cfg.Lifetime
	if lifetime <= 0 {
		lifetime = time.Hour
	}
	binding := cmp.Or(d.cfg.Binding, "U")
	q := []string{
		"ep=" + d.cfg.Endpoint,
		"lt=" + strconv.Itoa(int(lifetime/time.Second)),
		"lwm2m=1.1",
		"b=" + binding,
	}
	format := message.AppLinkFormat
	resp, err := d.request(ctx, "register", codes.POST, "/rd", q, &format, []byte(d.links()), codes.Created)
	if err != nil {
		return "", err
	}
	loc := joinPath(resp.Options, message.LocationPath)
	if loc == "" {
		return "", fmt.Errorf("devsim: register: 2.01 without Location-Path")
	}
	d.mu.Lock()
	d.location = loc
	d.mu.Unlock()
	d.log.Debug("registered", zap.String("location", loc))
	return loc, nil
}

// Update sends the LwM2M Update operation (CON POST {location}); anything
// but 2.04 Changed is a *CodeError. With AutoReconnect, an Update answered
// 4.04 Not Found is followed by a new Register, as a LwM2M client does, and
// Update returns the Register's result.
func (d *Device) Update(ctx context.Context) error {
	loc := d.Location()
	if loc == "" {
		return fmt.Errorf("devsim: update: %w", ErrNotRegistered)
	}
	_, err := d.request(ctx, "update", codes.POST, loc, nil, nil, nil, codes.Changed)
	if d.cfg.AutoReconnect && isNotFound(err) {
		d.log.Debug("update answered 4.04, registering again", zap.String("location", loc))
		_, err = d.Register(ctx)
	}
	return err
}

// updateOrRegister sends Update to the registration location, and Register
// if there is none or the Update is answered 4.04 Not Found.
func (d *Device) updateOrRegister(ctx context.Context) error {
	loc := d.Location()
	if loc != "" {
		_, err := d.request(ctx, "update", codes.POST, loc, nil, nil, nil, codes.Changed)
		if !isNotFound(err) {
			return err
		}
		d.log.Debug("update answered 4.04, registering again", zap.String("location", loc))
	}
	_, err := d.Register(ctx)
	return err
}

func isNotFound(err error) bool {
	var ce *CodeError
	return errors.As(err, &ce) && ce.Code == codes.NotFound
}

// sessionGone reports whether err says the session may be gone: no
// acknowledgement at all, or the gateway ended it.
func sessionGone(err error) bool {
	return errors.Is(err, ErrTimeout) || errors.Is(err, ErrSessionLost)
}

// roundTrip runs one exchange the device starts: first the idle
// re-handshake when it is due (RehandshakeIdle), and with AutoReconnect,
// when the exchange finds the session gone, a new handshake, the Update or
// Register a LwM2M client sends on a new session, and one retry of m (a
// Register, Update or De-register is itself that message and is only
// retried).
func (d *Device) roundTrip(ctx context.Context, op string, m message.Message) (message.Message, error) {
	if err := d.maybeRehandshake(ctx); err != nil {
		return message.Message{}, err
	}
	resp, err := d.ex.roundTrip(ctx, "", d.send, m)
	if errors.Is(err, errSessionReplaced) && ctx.Err() == nil {
		// Another exchange of this device re-handshook under this one
		// (devsim runs several at once per device; a LwM2M client runs
		// one): wait for that handshake and send on its session.
		d.hsMu.Lock()
		d.hsMu.Unlock() //nolint:staticcheck // an empty critical section: waiting is the point
		resp, err = d.ex.roundTrip(ctx, "", d.send, m)
	}
	if err == nil || !d.cfg.AutoReconnect || !sessionGone(err) || ctx.Err() != nil {
		return resp, err
	}
	d.log.Debug("session gone, reconnecting", zap.String("op", op), zap.Error(err))
	if herr := d.rehandshake(ctx, HandshakeReconnect); herr != nil {
		return resp, fmt.Errorf("%w; reconnecting: %w", err, herr)
	}
	switch op {
	case "register", "update", "deregister":
	default:
		if uerr := d.updateOrRegister(ctx); uerr != nil {
			return resp, fmt.Errorf("%w; after reconnecting: %w", err, uerr)
		}
	}
	return d.ex.roundTrip(ctx, "", d.send, m)
}

// SetLocation makes loc the device's registration location, so that its
// next Update or De-register goes there: a test of rule L2 can have one
// identity try another identity's registration.
func (d *Device) SetLocation(loc string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.location = loc
}

// Deregister sends the LwM2M De-register operation (CON DELETE {location});
// anything but 2.02 Deleted is a *CodeError.
func (d *Device) Deregister(ctx context.Context) error {
	loc := d.Location()
	if loc == "" {
		return fmt.Errorf("devsim: deregister: %w", ErrNotRegistered)
	}
	if _, err := d.request(ctx, "deregister", codes.DELETE, loc, nil, nil, nil, codes.Deleted); err != nil {
		return err
	}
	d.mu.Lock()
	d.location = ""
	d.mu.Unlock()
	return nil
}

// BootstrapRequest sends the LwM2M Bootstrap-Request (CON POST /bs?ep=..);
// anything but 2.04 Changed is a *CodeError.
func (d *Device) BootstrapRequest(ctx context.Context) error {
	_, err := d.request(ctx, "bootstrap-request", codes.POST, "/bs", []string{"ep=" + d.cfg.Endpoint}, nil, nil, codes.Changed)
	return err
}

// Send sends the LwM2M Send operation (CON POST /dp) with a SenML JSON
// payload; anything but 2.04 Changed is a *CodeError.
func (d *Device) Send(ctx context.Context, payload []byte) error {
	format := message.AppSenmlJSON
	_, err := d.request(ctx, "send", codes.POST, "/dp", nil, &format, payload, codes.Changed)
	return err
}

// Notify sends a notification (CON 2.05 Content with an increasing Observe
// value, RFC 7641 §4.2) on the most recent observation the backend
// established with GET Observe=0, and waits for its ACK. The payload also
// becomes the observed resource's value. Without an observation it returns
// ErrNoObservation; if the backend answers with Reset, the observation is
// dropped (RFC 7641 §3.6) and ErrReset returned.
func (d *Device) Notify(ctx context.Context, payload []byte) error {
	d.mu.Lock()
	if len(d.observations) == 0 {
		d.mu.Unlock()
		return ErrNoObservation
	}
	obs := d.observations[len(d.observations)-1]
	d.observeSeq++
	seq := d.observeSeq
	d.resources[obs.path] = slices.Clone(payload)
	d.mu.Unlock()

	m := message.Message{Type: message.Confirmable, Code: codes.Content, MessageID: -1, Token: message.Token(obs.token), Payload: payload}
	m.Options = withUint(m.Options, message.Observe, seq)
	m.Options = withUint(m.Options, message.ContentFormat, uint32(message.TextPlain))
	_, err := d.roundTrip(ctx, "notify", m)
	if err != nil {
		if errors.Is(err, ErrReset) {
			d.dropObservation(obs.token)
		}
		return fmt.Errorf("devsim: notify %s: %w", obs.path, err)
	}
	return nil
}

func (d *Device) dropObservation(token string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.observations = slices.DeleteFunc(d.observations, func(o observation) bool { return o.token == token })
}

// serve answers a backend request: GET reads a resource (Observe=0 also
// establishes an observation, Observe=1 cancels it), PUT writes an existing
// resource, POST executes one; unknown paths get 4.04, other methods 4.05.
func (d *Device) serve(req message.Message) (message.Message, bool) {
	d.served.Add(1)
	path := joinPath(req.Options, message.URIPath)
	resp := message.Message{}
	d.mu.Lock()
	defer d.mu.Unlock()
	value, ok := d.resources[path]
	switch {
	case !ok:
		resp.Code = codes.NotFound
	case req.Code == codes.GET:
		resp.Code = codes.Content
		resp.Payload = slices.Clone(value)
		resp.Options = withUint(resp.Options, message.ContentFormat, uint32(message.TextPlain))
		if obs, has := observeValue(req); has {
			token := string(req.Token)
			d.observations = slices.DeleteFunc(d.observations, func(o observation) bool { return o.token == token })
			if obs == 0 {
				d.observations = append(d.observations, observation{token: token, path: path})
				d.observeSeq++
				resp.Options = withUint(resp.Options, message.Observe, d.observeSeq)
			}
		}
	case req.Code == codes.PUT:
		d.resources[path] = slices.Clone(req.Payload)
		resp.Code = codes.Changed
	case req.Code == codes.POST:
		resp.Code = codes.Changed
	default:
		resp.Code = codes.MethodNotAllowed
	}
	d.log.Debug("served backend request", zap.Stringer("code", req.Code), zap.String("path", path), zap.Stringer("response", resp.Code))
	return resp, true
}

// links lists the object instances of the device's resources in CoRE link
// format, e.g. "</1/0>,</3/0>" (LwM2M Register payload).
func (d *Device) links() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var instances [][]string
	for p := range d.resources {
		segs := strings.Split(strings.Trim(p, "/"), "/")
		if len(segs) > 2 {
			segs = segs[:2]
		}
		if !slices.ContainsFunc(instances, func(s []string) bool { return slices.Equal(s, segs) }) {
			instances = append(instances, segs)
		}
	}
	slices.SortFunc(instances, func(a, b []string) int {
		for i := range min(len(a), len(b)) {
			x, errX := strconv.Atoi(a[i])
			y, errY := strconv.Atoi(b[i])
			c := cmp.Compare(a[i], b[i])
			if errX == nil && errY == nil {
				c = cmp.Compare(x, y)
			}
			if c != 0 {
				return c
			}
		}
		return cmp.Compare(len(a), len(b))
	})
	parts := make([]string, len(instances))
	for i, segs := range instances {
		parts[i] = "</" + strings.Join(segs, "/") + ">"
	}
	return strings.Join(parts, ",")
}
