//go:build linux

package main

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

// The floor relays each device's datagrams to the backend through a socket
// of its own (the backend sees one address per device) and the backend's
// answers back to that device, unchanged by the seal and open.
func TestRelayTwoDevices(t *testing.T) {
	backend, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	lc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	listen := lc.LocalAddr().(*net.UDPAddr).AddrPort()
	lc.Close()
	r, err := newRelay(listen, backend.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.loop() }()

	seen := map[netip.AddrPort]bool{}
	for i, payload := range [][]byte{[]byte("first device"), []byte("second device")} {
		dev, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(listen))
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		if _, err := dev.Write(payload); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		_ = backend.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, from, err := backend.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("device %d: backend read: %v", i, err)
		}
		if !bytes.Equal(buf[:n], payload) {
			t.Fatalf("device %d: backend got %q", i, buf[:n])
		}
		seen[from] = true
		answer := append([]byte("answer to "), payload...)
		if _, err := backend.WriteToUDPAddrPort(answer, from); err != nil {
			t.Fatal(err)
		}
		_ = dev.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err = dev.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], answer) {
			t.Fatalf("device %d: got %q, %v", i, buf[:n], err)
		}
	}
	if len(seen) != 2 {
		t.Errorf("the backend saw %d source addresses for two devices", len(seen))
	}
}

// Bad flags are refused with the flag named.
func TestRunBadAddresses(t *testing.T) {
	if err := run("localhost", "127.0.0.1:1"); err == nil {
		t.Error("--listen without a port accepted")
	}
	if err := run("127.0.0.1:0", ""); err == nil {
		t.Error("empty --backend accepted")
	}
}
