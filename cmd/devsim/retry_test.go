package main

import (
	"net"
	"strconv"
	"sync"
	"testing"
)

// dropFirstProxy relays UDP between clients and target, one upstream
// socket per client, and loses the first datagram of each client: a path
// that eats a device's first ClientHello, for tests of what the device does
// next.
func dropFirstProxy(t *testing.T, target string) string {
	t.Helper()
	dst, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	ups := make(map[string]*net.UDPConn)
	t.Cleanup(func() {
		_ = front.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range ups {
			_ = c.Close()
		}
	})
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			mu.Lock()
			up, seen := ups[from.String()]
			if !seen {
				if up, err = net.DialUDP("udp", nil, dst); err != nil {
					mu.Unlock()
					t.Error(err)
					return
				}
				ups[from.String()] = up
				go func() { // answers back to the client
					b := make([]byte, 64<<10)
					for {
						n, err := up.Read(b)
						if err != nil {
							return
						}
						_, _ = front.WriteToUDP(b[:n], from)
					}
				}()
			}
			mu.Unlock()
			if seen {
				_, _ = up.Write(buf[:n])
			}
		}
	}()
	return front.LocalAddr().String()
}

// TestConnectRetries: a device whose first handshake times out (its only
// ClientHello lost, no retransmission before --timeout) tries again from
// the same port and connects; the summary counts the retry apart from the
// failures (what the benchmark's scale step relies on).
func TestConnectRetries(t *testing.T) {
	keys, path := writeTestKeys(t, 2, "1.3-dhe=1,1.2-ccm8=1")
	addr, _ := startGateway(t, keys, backendEcho)
	proxy := dropFirstProxy(t, addr)
	// Fixed source ports (--source-port-base): the retry comes from the
	// address whose first datagram the path ate.
	o, err := parseFlags([]string{"--raw", "--server", proxy, "--keys", path, "--devices", "2", "--mix", "1.3-dhe=1,1.2-ccm8=1",
		"--source-ips", "2", "--source-port-base", strconv.Itoa(freeUDPPort(t)), "--timeout", "3s", "--flight-interval", "30s", "--connect-retries", "2",
		"--msg-rate", "max", "--messages", "20", "--duration", "30s", "--progress", "-1s"}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	s := runTool(t, o)
	if s.Handshakes.OK != 2 || s.Handshakes.Failed != 0 || s.Handshakes.Retried != 2 || s.Requests.OK != 20 || s.Requests.Failed != 0 {
		t.Fatalf("handshakes ok %d, failed %d, retried %d; requests %d/%d; errors %v",
			s.Handshakes.OK, s.Handshakes.Failed, s.Handshakes.Retried, s.Requests.OK, s.Requests.Failed, s.ErrorSamples)
	}
	if s.Errors["handshake_retried_timeout"] != 2 {
		t.Errorf("errors %v: want 2 retried timeouts", s.Errors)
	}

	// Without retries the same path fails both devices' handshakes.
	o, err = parseFlags([]string{"--raw", "--server", dropFirstProxy(t, addr), "--keys", path, "--devices", "2", "--mix", "1.3-dhe=1,1.2-ccm8=1",
		"--timeout", "3s", "--flight-interval", "30s", "--msg-rate", "max", "--messages", "1", "--duration", "5s", "--progress", "-1s"}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if s := runTool(t, o); s.Handshakes.Failed != 2 || s.Handshakes.Retried != 0 {
		t.Errorf("no retries: handshakes failed %d, retried %d", s.Handshakes.Failed, s.Handshakes.Retried)
	}
	if _, err := parseFlags([]string{"--keys", "k", "--connect-retries", "11"}, testWriter{t}); err == nil {
		t.Error("--connect-retries 11 accepted")
	}
}

// freeUDPPort returns a port no UDP socket of 127.0.0.1 uses now (and very
// likely none of 127.1.x.y, where --source-ips binds).
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
