package devsim

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/protocol/handshake"
)

// udpPair returns a LossyConn over one loopback socket and a plain socket
// to talk to it.
func udpPair(t *testing.T, loss Loss) (*LossyConn, *net.UDPConn) {
	t.Helper()
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	lc, err := NewLossyConn(a, loss)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lc.Close(); _ = b.Close() })
	return lc, b
}

// readN reads n datagrams from c, each within 5s.
func readN(t *testing.T, c net.PacketConn, n int) []string {
	t.Helper()
	var got []string
	buf := make([]byte, 2048)
	for range n {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, _, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, string(buf[:k]))
	}
	return got
}

// TestLossyConnWrite: DropFirst loses the first datagrams, Duplicate sends
// each twice, and the counters say so. The marker datagram sent last
// proves nothing else is on its way: datagrams on loopback keep their order.
func TestLossyConnWrite(t *testing.T) {
	lc, peer := udpPair(t, Loss{Out: Impairment{DropFirst: 2, Duplicate: 1}})
	for _, p := range []string{"a", "b", "c", "d"} {
		if _, err := lc.WriteTo([]byte(p), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	if got := readN(t, peer, 4); !slices.Equal(got, []string{"c", "c", "d", "d"}) {
		t.Errorf("received %q", got)
	}
	if st := lc.Stats().Out; st != (PathStats{Datagrams: 4, Dropped: 2, Duplicated: 2}) {
		t.Errorf("stats %+v", st)
	}
}

// TestLossyConnReadDelay: with a delay and jitter every datagram still
// arrives (maybe reordered), counted as delayed; DropFirst applies to reads.
func TestLossyConnReadDelay(t *testing.T) {
	lc, peer := udpPair(t, Loss{In: Impairment{DropFirst: 1, Delay: 10 * time.Millisecond, Jitter: 30 * time.Millisecond}, Seed: 7})
	want := []string{"1", "2", "3", "4", "5"}
	for _, p := range append([]string{"lost"}, want...) {
		if _, err := peer.WriteTo([]byte(p), lc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	got := readN(t, lc, len(want))
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("received %q, want %q in any order", got, want)
	}
	if st := lc.Stats().In; st.Dropped != 1 || st.Delayed != 5 {
		t.Errorf("stats %+v", st)
	}
}

// TestLossyConnErrors: bad settings are refused with a clear error, and a
// closed conn refuses writes.
func TestLossyConnErrors(t *testing.T) {
	for _, loss := range []Loss{
		{Out: Impairment{Drop: 1.5}},
		{In: Impairment{Duplicate: -0.1}},
		{In: Impairment{DropFirst: -1}},
		{Out: Impairment{Delay: -time.Second}},
		{Out: Impairment{DropHandshake: map[handshake.Type]int{handshake.TypeClientHello: -1}}},
	} {
		if _, err := NewLossyConn(nil, loss); err == nil {
			t.Errorf("NewLossyConn(%+v) succeeded", loss)
		}
		cfg := DeviceConfig{Server: "127.0.0.1:1", Identity: []byte("id"), Key: []byte("k"), Endpoint: "ep", Loss: &loss}
		if _, err := Dial(context.Background(), cfg); err == nil {
			t.Errorf("Dial with Loss %+v succeeded", loss)
		}
	}
	lc, peer := udpPair(t, Loss{})
	_ = lc.Close()
	if _, err := lc.WriteTo([]byte("x"), peer.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteTo after Close: %v", err)
	}
	if _, _, err := lc.ReadFrom(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadFrom after Close: %v", err)
	}
}

// TestClientHelloRetransmit: a device whose first ClientHello is lost, or
// whose HelloVerifyRequest (DTLS 1.2) or first ServerHello (1.3) is lost, retransmits its ClientHello after its flight
// interval and completes the handshake: the case of issue 12's legitimate
// devices under a flood.
func TestClientHelloRetransmit(t *testing.T) {
	tests := []struct {
		name    string
		version string
		loss    Loss
	}{
		{"1.3 ClientHello lost", "1.3", Loss{Out: Impairment{DropHandshake: map[handshake.Type]int{handshake.TypeClientHello: 1}}}},
		{"1.2 ClientHello lost", "1.2", Loss{Out: Impairment{DropHandshake: map[handshake.Type]int{handshake.TypeClientHello: 1}}}},
		{"1.2 HelloVerifyRequest lost", "1.2", Loss{In: Impairment{DropHandshake: map[handshake.Type]int{handshake.TypeHelloVerifyRequest: 1}}}},
		{"1.3 first ServerHello lost", "1.3", Loss{In: Impairment{DropHandshake: map[handshake.Type]int{handshake.TypeServerHello: 1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			backend, r := lifecycleSite(t)
			cfg := deviceConfig(r, "retransmit", tt.version)
			cfg.Loss = &tt.loss
			d := dial(t, ctx, cfg)
			if _, err := d.Register(ctx); err != nil {
				t.Fatal(err)
			}
			st := d.LossStats()
			if st.Out.Dropped+st.In.Dropped != 1 {
				t.Errorf("loss stats %+v, want one datagram dropped", st)
			}
			want := clientHellos(t, ctx, tt.version) // without loss
			if tt.loss.In.DropHandshake != nil {
				want++ // the answer lost: one ClientHello retransmitted
			}
			in, _ := r.tap.datagrams()
			if got := countHandshakes(in, handshake.TypeClientHello); got != want {
				t.Errorf("relay saw %d ClientHellos, want %d", got, want)
			}
			if _, err := backend.WaitRegistration(ctx, "retransmit"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLossyDevice: a device on a path that loses a fifth of the datagrams
// both ways and duplicates some still registers, updates and is read, by
// DTLS and CoAP retransmission; the counters show the path did its work.
func TestLossyDevice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	backend, r := lifecycleSite(t)
	cfg := deviceConfig(r, "lossy", "1.3")
	cfg.Loss = &Loss{Out: Impairment{Drop: 0.2, Duplicate: 0.2}, In: Impairment{Drop: 0.2, Jitter: 20 * time.Millisecond}, Seed: 42}
	cfg.ACKTimeout, cfg.MaxRetransmit = time.Second, 8
	cfg.FlightInterval = 500 * time.Millisecond
	cfg.HandshakeTimeout = 30 * time.Second
	d := dial(t, ctx, cfg)
	if _, err := d.Register(ctx); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := d.Update(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if reg, _ := backend.Registration("lossy"); reg.Updates != 5 {
		t.Errorf("backend saw %d updates, want 5 (duplicates are deduplicated)", reg.Updates)
	}
	st := d.LossStats()
	if st.Out.Dropped+st.In.Dropped == 0 || st.Out.Duplicated == 0 || st.In.Delayed == 0 {
		t.Errorf("loss stats %+v: the path did nothing", st)
	}
}

// clientHellos returns how many ClientHellos a lossless handshake of
// version sends to the relay.
func clientHellos(t *testing.T, ctx context.Context, version string) int {
	t.Helper()
	_, r := lifecycleSite(t)
	dial(t, ctx, deviceConfig(r, "baseline", version))
	in, _ := r.tap.datagrams()
	return countHandshakes(in, handshake.TypeClientHello)
}

func countHandshakes(datagrams [][]byte, typ handshake.Type) int {
	n := 0
	for _, p := range datagrams {
		if slices.Contains(plaintextHandshakeTypes(p), typ) {
			n++
		}
	}
	return n
}
