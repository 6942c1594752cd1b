package gateway

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestSeveralListenersIPv4AndIPv6 serves one store on two sockets, one per
// address family.
func TestSeveralListenersIPv4AndIPv6(t *testing.T) {
	if pc, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Fatalf("this machine has no IPv6 loopback: %v", err)
	} else {
		pc.Close()
	}
	backend := newEchoBackend(t)
	k := testKey("dev", 1)
	srv, _ := startServer(t, Config{
		Store:     newMapStore(k),
		Backends:  map[string]string{"dm": backend.pc.LocalAddr().String()},
		Listeners: []Listener{{Address: "127.0.0.1:0"}, {Address: "[::1]:0"}},
	})
	addrs := srv.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("listening on %v", addrs)
	}
	for _, a := range addrs {
		t.Run(a.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := (client{id: k.Identity, key: k.Secret}).dial(ctx, a.(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			roundTrip(t, conn, []byte("via "+a.String()))
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	store := newMapStore()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no store", Config{Backends: map[string]string{"dm": "127.0.0.1:5683"}}},
		{"no backend", Config{Store: store}},
		{"bad backend address", Config{Store: store, Backends: map[string]string{"dm": "nowhere"}}},
		{"default backend missing", Config{Store: store, Backends: map[string]string{"a": "127.0.0.1:1", "b": "127.0.0.1:2"}, DefaultBackend: "c"}},
		{"cid too long", Config{Store: store, Backends: map[string]string{"dm": "127.0.0.1:5683"}, CIDLength: 40}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("New accepted a bad config")
			}
		})
	}
	srv, err := New(Config{Store: store, Backends: map[string]string{"dm": "127.0.0.1:5683"}, Listeners: []Listener{{Address: "127.0.0.1:99999"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err == nil {
		t.Fatal("Listen accepted port 99999")
	}
}
