package gateway

import (
	"fmt"
	"net/netip"
	"testing"
)

// TestUpstreamSourceAddresses (issue 10): with a pool of source addresses,
// each device's upstream socket binds to one of them, so a gateway serves
// one ephemeral port range of devices per address and backend.
func TestUpstreamSourceAddresses(t *testing.T) {
	backend := newEchoBackend(t)
	pool := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}
	var keys []client
	store := newMapStore()
	for i := range 4 {
		k := testKey(fmt.Sprintf("src-%d", i), 0)
		store.put(k)
		keys = append(keys, client{id: k.Identity, key: k.Secret})
	}
	_, addr := startServer(t, Config{Store: store, Backends: map[string]string{"dm": backend.pc.LocalAddr().String()},
		UpstreamSources: pool})
	for _, c := range keys {
		roundTrip(t, c.mustDial(t, addr), []byte("hi"))
	}
	seen := map[netip.Addr]bool{}
	for _, s := range backend.sources() {
		ip := s.AddrPort().Addr().Unmap()
		if ip != pool[0] && ip != pool[1] {
			t.Fatalf("upstream socket bound to %v, outside the pool %v", ip, pool)
		}
		seen[ip] = true
	}
	if len(backend.sources()) != len(keys) {
		t.Fatalf("backend saw %d datagrams, want %d", len(backend.sources()), len(keys))
	}
	t.Logf("addresses used: %v", seen)
}
