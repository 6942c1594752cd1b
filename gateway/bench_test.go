package gateway

import (
	"context"
	"crypto"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// BenchmarkHandshake measures full handshakes through the gateway, client
// and server in one process (so ns/op is both sides' CPU on this machine).
// The load-tool issue measures the server alone.
//
//	go test -run '^$' -bench Handshake -benchtime 200x ./gateway/
func BenchmarkHandshake(b *testing.B) {
	backend, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer backend.Close()
	k := pskstore.Key{Identity: []byte("bench"), Secret: make([]byte, 32), Hash: crypto.SHA256,
		Modes: pskstore.ModeDHE | pskstore.ModeKE, Legacy: true}
	for i := range k.Secret {
		k.Secret[i] = byte(i*7 + 3)
	}
	srv, err := New(Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.LocalAddr().String()},
		Listeners: []Listener{{Address: "127.0.0.1:0"}}, AllowParallelSessions: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(context.Background()) }()
	defer srv.Close()
	addr := srv.Addrs()[0].(*net.UDPAddr)
	modes := []struct {
		name string
		c    client
	}{
		{"dtls13_psk_dhe_ke", client{id: k.Identity, key: k.Secret}},
		{"dtls13_psk_ke", client{id: k.Identity, key: k.Secret, pskKEOnly: true}},
		{"dtls12_psk_ccm8", client{id: k.Identity, key: k.Secret, version: protocol.Version1_2}},
		{"dtls12_ecdhe_psk", client{id: k.Identity, key: k.Secret, version: protocol.Version1_2,
			suites: []ciphersuite.ID{ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256}}},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				conn, err := m.c.dial(ctx, addr)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				_ = conn.Close()
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
		})
	}
}

// BenchmarkFailedHandshake measures DTLS 1.3 handshakes that fail at the
// binder, with an identity the store does not know and with a known
// identity and a wrong key (issue 9.3): the two must cost the same, so
// their time tells a client nothing. Each iteration runs one of each, in
// alternating order, so both kinds see the same load; the medians are
// reported as unknown-ns and wrongkey-ns (client and server in one
// process). TestUnknownIdentityLooksLikeWrongKey compares them at the wire.
//
//	go test -run '^$' -bench FailedHandshake -benchtime 400x ./gateway/
func BenchmarkFailedHandshake(b *testing.B) {
	backend, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer backend.Close()
	k := pskstore.Key{Identity: []byte("bench"), Secret: make([]byte, 32)}
	wrong := make([]byte, 32)
	for i := range k.Secret {
		k.Secret[i], wrong[i] = byte(i*7+3), byte(i*5+1)
	}
	srv, err := New(Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.LocalAddr().String()},
		Listeners: []Listener{{Address: "127.0.0.1:0"}}, HandshakeRate: -1})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(context.Background()) }()
	defer srv.Close()
	addr := srv.Addrs()[0].(*net.UDPAddr)
	kinds := []client{{id: []byte("nobody"), key: k.Secret}, {id: k.Identity, key: wrong}}
	took := [2][]time.Duration{}
	i := 0
	for b.Loop() {
		for j := range kinds {
			kind := (i + j) % 2
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			conn, err := kinds[kind].dial(ctx, addr)
			cancel()
			if err == nil {
				_ = conn.Close()
				b.Fatal("handshake succeeded")
			}
			took[kind] = append(took[kind], time.Since(start))
		}
		i++
	}
	for kind, unit := range []string{"unknown-ns", "wrongkey-ns"} {
		slices.Sort(took[kind])
		b.ReportMetric(float64(took[kind][len(took[kind])/2].Nanoseconds()), unit)
	}
}
