package gateway

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/pion/dtls/v4/pkg/protocol"
)

const testParkAfter = 200 * time.Millisecond

// waitParked waits until n sessions are parked.
func waitParked(t *testing.T, srv *Server, n int64) {
	t.Helper()
	waitFor(t, func() bool { return srv.Stats().Parked == n }, "%d parked sessions (stats %+v)", n, srv.Stats())
}

// parkedSetup starts a devsim backend, a gateway with ParkAfter and a
// key for a device of the given DTLS version (endpoint bound, Legacy so
// DTLS 1.2 CCM_8 is allowed).
func parkedSetup(t *testing.T, version string, cfg Config) (*Server, *net.UDPAddr, *devsim.Backend, devsimKey) {
	t.Helper()
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = backend.Close() })
	k := testKey("sleeper-"+version, 1)
	k.Endpoint, k.Legacy = "urn:dev:sleeper-"+version, true
	cfg.Store = newMapStore(k)
	cfg.Backends = map[string]string{"dm": backend.Addr().String()}
	if cfg.ParkAfter == 0 {
		cfg.ParkAfter = testParkAfter
	}
	srv, addr := startServer(t, cfg)
	return srv, addr, backend, devsimKey{id: k.Identity, secret: k.Secret, ep: k.Endpoint}
}

type devsimKey struct {
	id, secret []byte
	ep         string
}

func dialDevice(t *testing.T, ctx context.Context, server, version string, k devsimKey) *devsim.Device {
	t.Helper()
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: server, Identity: k.id, Key: k.secret, Version: version,
		Endpoint: k.ep, ACKTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// TestParkResume: a parked DTLS 1.2 or 1.3 session resumes on the device's
// next request and on a backend-initiated one; the backend sees the same
// upstream address throughout.
func TestParkResume(t *testing.T) {
	for _, version := range []string{"1.2", "1.3"} {
		t.Run("dtls"+version, func(t *testing.T) {
			srv, addr, backend, k := parkedSetup(t, version, Config{})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d := dialDevice(t, ctx, addr.String(), version, k)
			if _, err := d.Register(ctx); err != nil {
				t.Fatal(err)
			}
			before, _ := backend.Registration(k.ep)
			waitParked(t, srv, 1)

			// Device → backend resumes.
			if err := d.Update(ctx); err != nil {
				t.Fatalf("update after park: %v", err)
			}
			after, _ := backend.Registration(k.ep)
			if after.Addr.String() != before.Addr.String() || after.Updates != 1 {
				t.Fatalf("backend saw the device move: %v -> %v (updates %d)", before.Addr, after.Addr, after.Updates)
			}
			waitParked(t, srv, 1)

			// Backend → device resumes.
			if v, err := backend.Read(ctx, k.ep, "/3/0/0"); err != nil || len(v) == 0 {
				t.Fatalf("backend read of a parked device: %q, %v", v, err)
			}
			waitParked(t, srv, 1)
			if err := d.Update(ctx); err != nil {
				t.Fatalf("second update: %v", err)
			}
			last, _ := backend.Registration(k.ep)
			if last.Addr.String() != before.Addr.String() {
				t.Fatalf("backend saw a new address: %v -> %v", before.Addr, last.Addr)
			}
			st := srv.Stats()
			if st.Established != 1 || st.HandshakesOK != 1 || st.Parks < 2 || st.Resumes < 3 || st.ResumeFailures != 0 {
				t.Fatalf("stats %+v", st)
			}
			if regs := srv.Registrations(); len(regs) != 1 || regs[0].Endpoint != k.ep {
				t.Fatalf("registrations of a parked session: %+v", regs)
			}
		})
	}
}

// TestParkResumeRaw: the same with plain test clients and the echo backend,
// and without Connection IDs (routed by address).
func TestParkResumeRaw(t *testing.T) {
	for _, tc := range []struct {
		name  string
		c     client
		noCID bool
	}{
		{"dtls13", client{}, false},
		{"dtls12", client{version: protocol.Version1_2}, false},
		{"dtls13_nocid", client{noCID: true}, true},
		{"dtls12_nocid", client{version: protocol.Version1_2, noCID: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend := newEchoBackend(t)
			k := testKey("raw", 1)
			k.Legacy = true
			srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()},
				ParkAfter: testParkAfter})
			c := tc.c
			c.id, c.key = k.Identity, k.Secret
			conn := c.mustDial(t, addr)
			roundTrip(t, conn, []byte("first"))
			for i := range 3 {
				waitParked(t, srv, 1)
				roundTrip(t, conn, []byte(fmt.Sprintf("after park %d", i)))
			}
			srcs := backend.sources()
			for _, s := range srcs {
				if s.String() != srcs[0].String() {
					t.Fatalf("backend saw several sources: %v", srcs)
				}
			}
			// A backend-initiated datagram reaches the parked device.
			waitParked(t, srv, 1)
			if _, err := backend.pc.WriteToUDP([]byte("server-initiated"), srcs[0]); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 2000)
			n, err := conn.Read(buf)
			if err != nil || string(buf[:n]) != "server-initiated" {
				t.Fatalf("backend datagram to parked device: %q, %v", buf[:n], err)
			}
		})
	}
}

// TestParkedRebindAndReplay: a parked device whose NAT binding changed
// resumes by CID from its new address; a replayed old record from an
// attacker resumes nothing useful and moves nothing.
func TestParkedRebindAndReplay(t *testing.T) {
	for _, version := range []string{"1.2", "1.3"} {
		t.Run("dtls"+version, func(t *testing.T) {
			srv, addr, backend, k := parkedSetup(t, version, Config{})
			relay := newNATRelay(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d := dialDevice(t, ctx, relay.dev.LocalAddr().String(), version, k)
			if _, err := d.Register(ctx); err != nil {
				t.Fatal(err)
			}
			before, _ := backend.Registration(k.ep)
			captured := relay.lastSent()
			waitParked(t, srv, 1)
			relay.rebind()
			if err := d.Update(ctx); err != nil {
				t.Fatalf("update after park and rebinding: %v", err)
			}
			after, _ := backend.Registration(k.ep)
			if after.Addr.String() != before.Addr.String() || after.Updates != 1 {
				t.Fatalf("backend saw the device move: %v -> %v (updates %d)", before.Addr, after.Addr, after.Updates)
			}

			// Replay to the parked session, from a third address.
			waitParked(t, srv, 1)
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
			time.Sleep(100 * time.Millisecond)
			if got, _ := backend.Registration(k.ep); got.Updates != 1 {
				t.Fatalf("replayed Update reached the backend: %d updates", got.Updates)
			}
			if v, err := backend.Read(ctx, k.ep, "/3/0/0"); err != nil || len(v) == 0 {
				t.Fatalf("device unreachable after replay: %q, %v", v, err)
			}
			if err := d.Update(ctx); err != nil {
				t.Fatalf("update after replay: %v", err)
			}
			_ = attacker.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, _, err := attacker.ReadFromUDP(make([]byte, 2000)); err == nil {
				t.Fatalf("gateway sent %d bytes to the replaying address", n)
			}
			if st := srv.Stats(); st.Established != 1 || st.HandshakesOK != 1 || st.ResumeFailures != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestParkedClose: revocation, idle timeout and shutdown close parked
// sessions (without close_notify: there is no Conn).
func TestParkedClose(t *testing.T) {
	t.Run("revocation", func(t *testing.T) {
		srv, addr, _, k := parkedSetup(t, "1.3", Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d := dialDevice(t, ctx, addr.String(), "1.3", k)
		if _, err := d.Register(ctx); err != nil {
			t.Fatal(err)
		}
		waitParked(t, srv, 1)
		if n := srv.CloseIdentity(k.id, "revoked"); n != 1 {
			t.Fatalf("CloseIdentity closed %d sessions", n)
		}
		if st := srv.Stats(); st.Parked != 0 || st.Established != 0 || st.Sessions != 0 {
			t.Fatalf("stats after revocation %+v", st)
		}
		short, cancelShort := context.WithTimeout(ctx, 1500*time.Millisecond)
		defer cancelShort()
		if err := d.Update(short); err == nil {
			t.Fatal("update through a revoked parked session succeeded")
		}
		if st := srv.Stats(); st.Resumes != 0 {
			t.Fatalf("revoked session resumed: %+v", st)
		}
	})
	t.Run("idle", func(t *testing.T) {
		srv, addr, _, k := parkedSetup(t, "1.2", Config{ParkAfter: 100 * time.Millisecond, IdleTimeout: 600 * time.Millisecond,
			RegistrationGrace: time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d := dialDevice(t, ctx, addr.String(), "1.2", k)
		_ = d
		waitParked(t, srv, 1)
		waitFor(t, func() bool { st := srv.Stats(); return st.Established == 0 && st.Parked == 0 }, "parked session reaped")
	})
	t.Run("shutdown", func(t *testing.T) {
		srv, addr, _, k := parkedSetup(t, "1.3", Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d := dialDevice(t, ctx, addr.String(), "1.3", k)
		if _, err := d.Register(ctx); err != nil {
			t.Fatal(err)
		}
		waitParked(t, srv, 1)
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		if st := srv.Stats(); st.Parked != 0 || st.Established != 0 {
			t.Fatalf("stats after shutdown %+v", st)
		}
	})
}

// TestParkDisabled: ParkAfter zero never parks.
func TestParkDisabled(t *testing.T) {
	backend := newEchoBackend(t)
	k := testKey("awake", 1)
	srv, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})
	conn := (client{id: k.Identity, key: k.Secret}).mustDial(t, addr)
	roundTrip(t, conn, []byte("x"))
	time.Sleep(300 * time.Millisecond)
	if st := srv.Stats(); st.Parks != 0 || st.Parked != 0 {
		t.Fatalf("parked with ParkAfter zero: %+v", st)
	}
}

// BenchmarkParkedMemory reports the heap per session, gateway and test
// clients in one process, with every session active and then with every
// session parked; the difference is what parking saves on the gateway.
//
//	go test -run '^$' -bench ParkedMemory -benchtime 1x ./gateway/
//	PARK_SESSIONS=2000 go test ...
func BenchmarkParkedMemory(b *testing.B) {
	n := 500
	if v, err := strconv.Atoi(os.Getenv("PARK_SESSIONS")); err == nil && v > 0 {
		n = v
	}
	for b.Loop() {
		parkedMemory(b, n)
	}
}

// heapInUse is live heap objects plus goroutine stacks, after GC.
func heapInUse() uint64 {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

func parkedMemory(b *testing.B, n int) {
	backendPC, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer backendPC.Close()
	go func() { // echo
		buf := make([]byte, 2048)
		for {
			m, from, err := backendPC.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = backendPC.WriteToUDP(buf[:m], from)
		}
	}()
	store := newMapStore()
	keys := make([]client, n)
	for i := range n {
		k := testKey(fmt.Sprintf("mem-%d", i), 1)
		store.put(k)
		keys[i] = client{id: k.Identity, key: k.Secret}
	}
	parkAfter := time.Hour // armed later by hand: see below
	srv, err := New(Config{Store: store, Backends: map[string]string{"dm": backendPC.LocalAddr().String()},
		Listeners: []Listener{{Address: "127.0.0.1:0"}}, ParkAfter: parkAfter, HandshakeRate: -1})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(context.Background()) }()
	defer srv.Close()
	addr := srv.Addrs()[0].(*net.UDPAddr)

	base := heapInUse()
	goBase := runtime.NumGoroutine()
	buf := make([]byte, 2048)
	for i, c := range keys {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		conn, err := c.dial(ctx, addr)
		cancel()
		if err != nil {
			b.Fatalf("session %d: %v", i, err)
		}
		defer conn.Close()
		// One datagram each way: the upstream socket is open.
		if _, err := conn.Write(coapNON([]byte("hi"))); err != nil {
			b.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(buf); err != nil {
			b.Fatalf("session %d read: %v", i, err)
		}
	}
	active := heapInUse()
	goActive := runtime.NumGoroutine()
	for _, s := range srv.table.snapshot() {
		if err := s.park(); err != nil {
			b.Fatalf("park: %v", err)
		}
	}
	if p := srv.Stats().Parked; p != int64(n) {
		b.Fatalf("%d of %d parked", p, n)
	}
	parked := heapInUse()
	goParked := runtime.NumGoroutine()
	perActive := float64(active-base) / float64(n)
	perParked := float64(int64(parked)-int64(base)) / float64(n)
	b.ReportMetric(perActive, "B/active-session")
	b.ReportMetric(perParked, "B/parked-session")
	b.ReportMetric((perActive - perParked), "B-saved/session")
	b.ReportMetric(float64(goActive-goBase)/float64(n), "goroutines/active")
	b.ReportMetric(float64(goParked-goBase)/float64(n), "goroutines/parked")
	var state int
	for _, s := range srv.table.snapshot() {
		s.lmu.Lock()
		state += len(s.parked)
		s.lmu.Unlock()
	}
	b.ReportMetric(float64(state)/float64(n), "state-B/parked")
}
