package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
	extension13 "github.com/pion/dtls/v4/pkg/protocol/extension/dtls13"
	"github.com/pion/dtls/v4/pkg/protocol/handshake"
)

// TestFloodHelloBuilder: the generated datagrams parse back with pion's
// record and handshake parsers as one whole ClientHello of the right DTLS
// version with a PSK offer and no cookie, and the fields a device
// randomizes differ from one hello to the next (issue 12).
func TestFloodHelloBuilder(t *testing.T) {
	for _, version := range []string{"1.3", "1.2"} {
		t.Run(version, func(t *testing.T) {
			tmpl, err := captureHello(version)
			if err != nil {
				t.Fatal(err)
			}
			fill := func(b []byte) {
				for i := range b {
					b[i] = byte(i*7 + len(b))
				}
			}
			var seen [][]byte
			for i := range 2 {
				n := byte(i)
				raw := tmpl.build(nil, func(b []byte) {
					fill(b)
					b[0] ^= 0x80 | n
				})
				hello, err := parseHello(raw)
				if err != nil {
					t.Fatal(err)
				}
				if len(hello.Cookie) != 0 {
					t.Errorf("cookie %x: a first ClientHello has none", hello.Cookie)
				}
				if hello.Version != protocol.Version1_2 {
					t.Errorf("legacy version %v, want DTLS 1.2 (also the value DTLS 1.3 uses)", hello.Version)
				}
				checkHello(t, version, hello)
				random := hello.Random.MarshalFixed()
				for _, prev := range seen {
					if bytes.Equal(prev, random[:]) {
						t.Error("two hellos with the same random")
					}
				}
				seen = append(seen, random[:])
				if len(raw) != len(tmpl.raw) {
					t.Errorf("built %d bytes, template %d", len(raw), len(tmpl.raw))
				}
			}
			if version == "1.3" && len(tmpl.vary) < 3 {
				t.Errorf("varying %d fields, want the random, the key share and the binder", len(tmpl.vary))
			}
		})
	}
}

// checkHello checks what the ClientHello of version offers.
func checkHello(t *testing.T, version string, hello *handshake.MessageClientHello) {
	t.Helper()
	var psk *extension13.OfferedPSKs
	var versions []protocol.Version
	for _, ext := range hello.Extensions {
		switch e := ext.(type) {
		case *extension13.OfferedPSKs:
			psk = e
		case *extension13.OfferedVersions:
			versions = e.Versions
		}
	}
	switch version {
	case "1.3":
		if psk == nil || len(psk.Identities) != 1 || !strings.HasPrefix(string(psk.Identities[0].Identity), "flood-") {
			t.Errorf("pre_shared_key %+v: want one flood identity", psk)
		}
		if !slices.Contains(versions, protocol.Version1_3) {
			t.Errorf("supported_versions %v: want DTLS 1.3", versions)
		}
	case "1.2":
		if psk != nil || slices.Contains(versions, protocol.Version1_3) {
			t.Errorf("a DTLS 1.2 hello offers 1.3: psk %v versions %v", psk, versions)
		}
		if !slices.Contains(hello.CipherSuiteIDs, uint16(ciphersuite.TLS_PSK_WITH_AES_128_CCM_8)) {
			t.Errorf("suites %x: want TLS_PSK_WITH_AES_128_CCM_8", hello.CipherSuiteIDs)
		}
	}
}

// floodInto runs a flood against a local UDP socket and returns what it
// received: datagrams by source address. The count bounds the run, not a
// clock.
func floodInto(t *testing.T, socket string, hellos, repeat int, extra ...string) (*floodSummary, map[string][][]byte) {
	t.Helper()
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	_ = sink.SetReadBuffer(4 << 20)
	o, err := parseFlags(append([]string{"--flood", "500", "--flood-count", strconv.Itoa(hellos), "--flood-repeat", strconv.Itoa(repeat),
		"--flood-socket", socket, "--server", sink.LocalAddr().String(), "--duration", "60s"}, extra...), testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string][][]byte)
	received := make(chan struct{})
	go func() {
		defer close(received)
		buf := make([]byte, 4096)
		for range hellos * repeat {
			_ = sink.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, from, err := sink.ReadFromUDP(buf)
			if err != nil {
				return
			}
			got[from.String()] = append(got[from.String()], bytes.Clone(buf[:n]))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := flood(ctx, &o.flood, o.duration, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	<-received
	return s, got
}

// checkFlood checks a flood's datagrams: every one a ClientHello, each
// hello from its own loopback source, repeated repeat times, both versions.
func checkFlood(t *testing.T, s *floodSummary, got map[string][][]byte, hellos, repeat int) {
	t.Helper()
	if s.Hellos != int64(hellos) || s.Datagrams != int64(hellos*repeat) || s.Errors != 0 {
		t.Errorf("summary %+v", s)
	}
	if len(got) != hellos {
		t.Errorf("%d sources, want %d (a new source address and port per hello)", len(got), hellos)
	}
	versions := map[string]int{}
	for from, dgrams := range got {
		addr, err := net.ResolveUDPAddr("udp4", from)
		if err != nil || addr.IP.To4() == nil || addr.IP.To4()[0] != 127 {
			t.Errorf("source %s is not in 127.0.0.0/8", from)
		}
		if len(dgrams) != repeat {
			t.Errorf("source %s sent %d datagrams, want %d", from, len(dgrams), repeat)
		}
		for _, d := range dgrams[1:] {
			if !bytes.Equal(d, dgrams[0]) {
				t.Errorf("source %s: a repeat differs from its hello", from)
			}
		}
		hello, err := parseHello(dgrams[0])
		if err != nil {
			t.Fatalf("source %s: %v", from, err)
		}
		v := "1.2"
		for _, ext := range hello.Extensions {
			if _, ok := ext.(*extension13.OfferedPSKs); ok {
				v = "1.3"
			}
		}
		versions[v]++
	}
	if versions["1.3"] == 0 || versions["1.2"] == 0 || versions["1.3"]+versions["1.2"] != len(got) {
		t.Errorf("versions %v, want the default 1:1 mix", versions)
	}
	if s.ByVersion["1.3"] != int64(versions["1.3"]) || s.ByVersion["1.2"] != int64(versions["1.2"]) {
		t.Errorf("summary versions %v, received %v", s.ByVersion, versions)
	}
}

// TestFloodUDP: the unprivileged path binds a UDP socket per hello on
// random 127.0.0.0/8 addresses.
func TestFloodUDP(t *testing.T) {
	const hellos, repeat = 40, 2
	s, got := floodInto(t, "udp", hellos, repeat)
	if s.Socket != "udp" {
		t.Errorf("socket %s", s.Socket)
	}
	checkFlood(t, s, got, hellos, repeat)
}

// TestFloodRepeatGap: repeats sent later, from the same source, all
// before the run ends.
func TestFloodRepeatGap(t *testing.T) {
	const hellos, repeat = 20, 3
	s, got := floodInto(t, "udp", hellos, repeat, "--flood-repeat-gap", "20ms")
	checkFlood(t, s, got, hellos, repeat)
	if s.RepeatsNotSent != 0 {
		t.Errorf("%d repeats not sent", s.RepeatsNotSent)
	}
}

// TestFloodRaw: as root, the raw-socket path spoofs sources inside
// 127.0.0.0/8 and the receiver sees valid UDP (the kernel checks our
// checksum on delivery).
func TestFloodRaw(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the raw-socket flood needs root (IP_HDRINCL); TestFloodUDP covers the unprivileged path")
	}
	const hellos, repeat = 40, 3
	s, got := floodInto(t, "raw", hellos, repeat)
	if s.Socket != "raw" {
		t.Errorf("socket %s", s.Socket)
	}
	checkFlood(t, s, got, hellos, repeat)
}

// TestFloodFlags: the flood never targets anything but IPv4 loopback, and
// bad values are usage errors.
func TestFloodFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--flood", "100", "--server", "10.0.0.1:5684"},
		{"--flood", "100", "--server", "192.168.1.1:5684"},
		{"--flood", "100", "--server", "[::1]:5684"},
		{"--flood", "100", "--server", "0.0.0.0:5684"},
		{"--flood", "100", "--server", "localhost:5684"},
		{"--flood", "100", "--server", "127.0.0.1"},
		{"--flood", "100", "--server", "127.0.0.1:5684", "--duration", "0"},
		{"--flood", "100", "--server", "127.0.0.1:5684", "--flood-repeat", "0"},
		{"--flood", "100", "--server", "127.0.0.1:5684", "--flood-socket", "tcp"},
		{"--flood", "100", "--server", "127.0.0.1:5684", "--flood-mix", "1.1=1"},
		{"--flood", "-1", "--server", "127.0.0.1:5684"},
	} {
		_, err := parseFlags(args, testWriter{t})
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: err = %v, want a usage error", args, err)
		}
	}
	o, err := parseFlags([]string{"--flood", "250", "--server", "127.0.0.1:5684", "--duration", "4s"}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if o.flood.count != 1000 || o.flood.repeat != 1 {
		t.Errorf("count %d repeat %d, want 1000 (rate × duration) and 1", o.flood.count, o.flood.repeat)
	}
}

func TestUDPChecksum(t *testing.T) {
	// A known packet: checksum verifies to zero over pseudo-header + UDP.
	src, dst := net.IPv4(127, 1, 2, 3), net.IPv4(127, 0, 0, 1)
	pkt := udpPacket(nil, src, dst, 40000, 5684, []byte("hello"))
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.To4())
	add(dst.To4())
	sum += 17 + uint32(len(pkt))
	add(pkt)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	if sum != 0xffff {
		t.Errorf("checksum does not verify: %04x", sum)
	}
	if err := checkLoopbackSource(net.IPv4(10, 0, 0, 1), dst); err == nil {
		t.Error("a non-loopback source passed the guard")
	}
}

// TestFloodHellosAnswered: a pion DTLS server takes the generated hellos
// for what they are and answers each (a HelloVerifyRequest in DTLS 1.2, an
// answer to the PSK offer in 1.3): the flood costs the server what a real
// ClientHello costs.
func TestFloodHellosAnswered(t *testing.T) {
	r, _ := startRelay(t, nil)
	o, err := parseFlags([]string{"--flood", "100", "--flood-count", "4", "--flood-socket", "udp",
		"--server", r.Addr().String(), "--duration", "60s"}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := flood(ctx, &o.flood, o.duration, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		in, out := r.Datagrams()
		if len(in) == 4 && len(out) >= 4 {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("relay read %d datagrams and answered %d, want 4 and at least 4", len(in), len(out))
		}
	}
}
