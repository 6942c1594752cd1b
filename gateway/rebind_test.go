package gateway

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
)

// natRelay stands in for a NAT between a device and the gateway: it can
// rebind, i.e. continue from a fresh source port, the way a NAT does after
// its binding expired. It keeps every datagram it forwarded to the gateway.
type natRelay struct {
	t       *testing.T
	dev     *net.UDPConn // device side
	gw      *net.UDPAddr
	mu      sync.Mutex
	out     *net.UDPConn // gateway side, the current binding
	device  *net.UDPAddr
	sent    [][]byte
	rebinds int
}

func newNATRelay(t *testing.T, gw *net.UDPAddr) *natRelay {
	dev, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &natRelay{t: t, dev: dev, gw: gw}
	r.rebind()
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := dev.ReadFromUDP(buf)
			if err != nil {
				return
			}
			p := append([]byte(nil), buf[:n]...)
			r.mu.Lock()
			r.device = from
			r.sent = append(r.sent, p)
			out := r.out
			r.mu.Unlock()
			_, _ = out.WriteToUDP(p, gw)
		}
	}()
	t.Cleanup(func() {
		_ = dev.Close()
		r.mu.Lock()
		_ = r.out.Close()
		r.mu.Unlock()
	})
	return r
}

// rebind moves to a new source port and forgets the old one.
func (r *natRelay) rebind() {
	out, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	old := r.out
	r.out = out
	r.rebinds++
	r.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, err := out.Read(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			to := r.device
			r.mu.Unlock()
			if to != nil {
				_, _ = r.dev.WriteToUDP(buf[:n], to)
			}
		}
	}()
}

func (r *natRelay) lastSent() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent[len(r.sent)-1]
}

// TestCIDSurvivesNATRebinding: a device whose source address changes keeps
// its DTLS session, its registration and its upstream socket; the backend
// sees no change. A replayed or forged record from a third address does not
// move the session (RFC 9146 §6, RFC 9147 §9: only a newer authenticated
// record may).
func TestCIDSurvivesNATRebinding(t *testing.T) {
	for _, version := range []string{"1.2", "1.3"} {
		t.Run("dtls"+version, func(t *testing.T) {
			backend, err := devsim.NewBackend("127.0.0.1:0", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer backend.Close()
			k := testKey("roamer", 1)
			k.Endpoint, k.Legacy = "urn:dev:roamer", true
			srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.Addr().String()}})
			relay := newNATRelay(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: relay.dev.LocalAddr().String(), Identity: k.Identity, Key: k.Secret,
				Version: version, Endpoint: k.Endpoint, ACKTimeout: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if _, err := d.Register(ctx); err != nil {
				t.Fatal(err)
			}
			before, _ := backend.Registration(k.Endpoint)
			captured := relay.lastSent() // an authenticated record, soon stale

			relay.rebind()
			if err := d.Update(ctx); err != nil {
				t.Fatalf("update after rebinding: %v", err)
			}
			after, _ := backend.Registration(k.Endpoint)
			if after.Addr.String() != before.Addr.String() || after.Updates != 1 {
				t.Fatalf("backend saw the device move: %v -> %v (updates %d)", before.Addr, after.Addr, after.Updates)
			}
			if v, err := backend.Read(ctx, k.Endpoint, "/3/0/0"); err != nil || len(v) == 0 {
				t.Fatalf("backend read after rebinding: %q, %v", v, err)
			}
			if st := srv.Stats(); st.Established != 1 || st.HandshakesOK != 1 {
				t.Fatalf("session not kept: %+v", st)
			}

			// An attacker replays the captured record and sends a forged one
			// with the same CID from its own address.
			attacker, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer attacker.Close()
			forged := append([]byte(nil), captured...)
			forged[len(forged)-1] ^= 0xff
			for _, p := range [][]byte{captured, forged} {
				if _, err := attacker.WriteToUDP(p, addr); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(200 * time.Millisecond)
			if v, err := backend.Read(ctx, k.Endpoint, "/3/0/0"); err != nil || len(v) == 0 {
				t.Fatalf("device unreachable after replay: %q, %v", v, err)
			}
			_ = attacker.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, _, err := attacker.ReadFromUDP(make([]byte, 2000)); err == nil {
				t.Fatalf("gateway sent %d bytes to the replaying address", n)
			}
		})
	}
}
