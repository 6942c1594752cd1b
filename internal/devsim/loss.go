package devsim

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v4/pkg/protocol"
	"github.com/pion/dtls/v4/pkg/protocol/handshake"
	"github.com/pion/dtls/v4/pkg/protocol/recordlayer"
	"github.com/pion/transport/v5/packetio"
)

// Loss describes an impaired network path, for LossyConn and
// DeviceConfig.Loss: what happens to datagrams written (Out) and read (In).
// For a device, Out is device to gateway and In gateway to device.
type Loss struct {
	Out, In Impairment
	// Seed makes the random choices repeatable; 0 picks a random seed.
	Seed uint64
}

// Impairment is what one direction of a path does to datagrams. The zero
// value passes everything unchanged. Rules apply in this order: DropFirst,
// DropHandshake, Drop, then Duplicate and Delay/Jitter on what is left.
type Impairment struct {
	// Drop is the probability, 0..1, that a datagram is lost.
	Drop float64
	// DropFirst loses the first DropFirst datagrams.
	DropFirst int
	// DropHandshake loses, per handshake message type, the first N
	// datagrams that carry a plaintext (epoch 0) handshake message of that
	// type: ClientHello, HelloVerifyRequest, ServerHello (a DTLS 1.3
	// HelloRetryRequest is a ServerHello too). A lost ClientHello makes a
	// pion client retransmit it after its flight interval
	// (DeviceConfig.FlightInterval).
	DropHandshake map[handshake.Type]int
	// Duplicate is the probability, 0..1, that a datagram is delivered twice.
	Duplicate float64
	// Delay holds every datagram back this long, plus a random 0..Jitter;
	// jitter reorders datagrams.
	Delay, Jitter time.Duration
}

func (m Impairment) validate(dir string) error {
	bad := func(name string, p float64) error {
		if p < 0 || p > 1 {
			return fmt.Errorf("devsim: Loss.%s.%s %v: want 0..1", dir, name, p)
		}
		return nil
	}
	if err := errors.Join(bad("Drop", m.Drop), bad("Duplicate", m.Duplicate)); err != nil {
		return err
	}
	if m.DropFirst < 0 || m.Delay < 0 || m.Jitter < 0 {
		return fmt.Errorf("devsim: Loss.%s: DropFirst, Delay and Jitter must not be negative", dir)
	}
	for t, n := range m.DropHandshake {
		if n < 0 {
			return fmt.Errorf("devsim: Loss.%s.DropHandshake[%v] %d: must not be negative", dir, t, n)
		}
	}
	return nil
}

func (m Impairment) delays() bool { return m.Delay > 0 || m.Jitter > 0 }

// Validate reports a probability outside 0..1 or a negative count or delay.
func (l Loss) Validate() error {
	return errors.Join(l.Out.validate("Out"), l.In.validate("In"))
}

// PathStats counts what one direction of a LossyConn did.
type PathStats struct {
	Datagrams  int64 `json:"datagrams"` // offered to the path
	Dropped    int64 `json:"dropped"`
	Duplicated int64 `json:"duplicated"`
	Delayed    int64 `json:"delayed"`
}

// LossStats counts what a LossyConn did in each direction.
type LossStats struct {
	Out PathStats `json:"out"`
	In  PathStats `json:"in"`
}

// Add returns the sum of s and o (for totals over many devices).
func (s LossStats) Add(o LossStats) LossStats {
	add := func(a, b PathStats) PathStats {
		return PathStats{a.Datagrams + b.Datagrams, a.Dropped + b.Dropped, a.Duplicated + b.Duplicated, a.Delayed + b.Delayed}
	}
	return LossStats{Out: add(s.Out, o.Out), In: add(s.In, o.In)}
}

// LossyConn wraps a net.PacketConn with an impaired path (Loss), under a
// DTLS handshake as well as application data, on a device or under a
// server. Writes that are dropped succeed silently, as on a real network.
// A goroutine reads the wrapped conn; Close stops it. Safe for concurrent
// use.
type LossyConn struct {
	pc   net.PacketConn
	loss Loss

	mu      sync.Mutex // guards rng and the counters of DropFirst/DropHandshake
	rng     *rand.Rand
	seenOut int
	seenIn  int
	hsOut   map[handshake.Type]int
	hsIn    map[handshake.Type]int

	out, in pathCounters
	queue   *packetio.Buffer // what ReadFrom returns, after the In impairment
	timers  sync.WaitGroup   // delayed deliveries in flight
	closed  atomic.Bool

	readerDone chan struct{}
}

type pathCounters struct{ datagrams, dropped, duplicated, delayed atomic.Int64 }

func (c *pathCounters) stats() PathStats {
	return PathStats{c.datagrams.Load(), c.dropped.Load(), c.duplicated.Load(), c.delayed.Load()}
}

var _ net.PacketConn = (*LossyConn)(nil)

// NewLossyConn wraps pc. It returns an error if loss does not Validate.
func NewLossyConn(pc net.PacketConn, loss Loss) (*LossyConn, error) {
	if err := loss.Validate(); err != nil {
		return nil, err
	}
	seed := loss.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	c := &LossyConn{
		pc: pc, loss: loss,
		rng:        rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		hsOut:      make(map[handshake.Type]int),
		hsIn:       make(map[handshake.Type]int),
		queue:      packetio.NewBuffer(),
		readerDone: make(chan struct{}),
	}
	c.queue.SetLimitCount(portQueue)
	go c.readLoop()
	return c, nil
}

// Stats returns the counts so far.
func (c *LossyConn) Stats() LossStats { return LossStats{Out: c.out.stats(), In: c.in.stats()} }

// fate decides what happens to one datagram: dropped, or delivered copies
// times after delay.
func (c *LossyConn) fate(m Impairment, p []byte, seen *int, hs map[handshake.Type]int, ctr *pathCounters) (drop bool, copies int, delay time.Duration) {
	ctr.datagrams.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	*seen++
	drop = *seen <= m.DropFirst
	if !drop && len(m.DropHandshake) > 0 {
		for _, t := range plaintextHandshakeTypes(p) {
			if n := m.DropHandshake[t]; hs[t] < n {
				hs[t]++
				drop = true
				break
			}
		}
	}
	if !drop && m.Drop > 0 {
		drop = c.rng.Float64() < m.Drop
	}
	if drop {
		ctr.dropped.Add(1)
		return true, 0, 0
	}
	copies = 1
	if m.Duplicate > 0 && c.rng.Float64() < m.Duplicate {
		copies = 2
		ctr.duplicated.Add(1)
	}
	delay = m.Delay
	if m.Jitter > 0 {
		delay += time.Duration(c.rng.Int64N(int64(m.Jitter) + 1))
	}
	if delay > 0 {
		ctr.delayed.Add(1)
	}
	return false, copies, delay
}

// WriteTo sends p through the Out impairment. A dropped datagram counts as
// written.
func (c *LossyConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	drop, copies, delay := c.fate(c.loss.Out, p, &c.seenOut, c.hsOut, &c.out)
	if drop {
		return len(p), nil
	}
	if delay > 0 {
		p = slices.Clone(p)
		c.timers.Add(1)
		time.AfterFunc(delay, func() {
			defer c.timers.Done()
			for range copies {
				_, _ = c.pc.WriteTo(p, addr)
			}
		})
		return len(p), nil
	}
	for i := range copies {
		if n, err := c.pc.WriteTo(p, addr); err != nil && i == 0 {
			return n, err
		}
	}
	return len(p), nil
}

// readLoop reads the wrapped conn and queues what the In impairment lets
// through for ReadFrom.
func (c *LossyConn) readLoop() {
	defer close(c.readerDone)
	buf := make([]byte, 64*1024)
	for {
		n, from, err := c.pc.ReadFrom(buf)
		if err != nil {
			if c.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		drop, copies, delay := c.fate(c.loss.In, buf[:n], &c.seenIn, c.hsIn, &c.in)
		if drop {
			continue
		}
		attrs := packetio.Attributes{{Key: addrKey{}, Value: from}}
		if delay == 0 {
			for range copies {
				_, _ = c.queue.Write(buf[:n], attrs)
			}
			continue
		}
		p := slices.Clone(buf[:n])
		c.timers.Add(1)
		time.AfterFunc(delay, func() {
			defer c.timers.Done()
			for range copies {
				_, _ = c.queue.Write(p, attrs) // fails once closed: lost
			}
		})
	}
}

// ReadFrom returns the next datagram the In impairment delivered.
func (c *LossyConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, attrs, err := c.queue.Read(p, nil)
	if errors.Is(err, io.EOF) {
		return 0, nil, net.ErrClosed
	}
	if err != nil {
		return n, nil, err
	}
	from, _ := attrs.Get(addrKey{}).(net.Addr)
	return n, from, nil
}

// Close closes the wrapped conn, waits for the reader and for delayed
// datagrams (each is then lost). Idempotent.
func (c *LossyConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	err := c.pc.Close()
	_ = c.queue.Close()
	<-c.readerDone
	c.timers.Wait()
	return err
}

func (c *LossyConn) LocalAddr() net.Addr { return c.pc.LocalAddr() }

func (c *LossyConn) SetDeadline(t time.Time) error {
	return errors.Join(c.queue.SetReadDeadline(t), c.pc.SetWriteDeadline(t))
}

func (c *LossyConn) SetReadDeadline(t time.Time) error { return c.queue.SetReadDeadline(t) }

func (c *LossyConn) SetWriteDeadline(t time.Time) error { return c.pc.SetWriteDeadline(t) }

// plaintextHandshakeTypes returns the types of the handshake messages (or
// first fragments) carried in the epoch-0 plaintext records of a datagram.
func plaintextHandshakeTypes(datagram []byte) []handshake.Type {
	records, _ := recordlayer.UnpackDatagram(datagram, recordlayer.UnpackDatagramConfig{})
	var types []handshake.Type
	for _, raw := range records {
		rec, err := recordlayer.ParseRecord(raw, 0)
		if err != nil || rec.IsUnified() || rec.ContentType() != protocol.ContentTypeHandshake || rec.Epoch() != 0 {
			continue
		}
		var h handshake.Header
		if err := h.Unmarshal(rec.Payload()); err == nil {
			types = append(types, h.Type)
		}
	}
	return types
}
