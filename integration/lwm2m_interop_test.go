package integration

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// The tests in this file put an LwM2M server nobody on this project wrote
// behind the gateway: Telefonica's lwm2m-node-lib (on node-coap), pinned in
// integration/node/package-lock.json and installed by `make test` (`npm ci
// --prefix integration/node`). integration/node/server.js runs it on
// loopback and reports what it sees as JSON lines.

// nodeDir is integration/node, relative to this package's directory (where
// `go test` runs the test binary).
const nodeDir = "node"

// lwm2mNodeServer is a running integration/node/server.js.
type lwm2mNodeServer struct {
	addr  *net.UDPAddr
	stdin io.WriteCloser

	mu     sync.Mutex
	events []map[string]any
	stderr []byte // the last few KiB, for failure messages
	exited bool
	nextID int
}

// requireNodeLwM2M fails the test when node or the npm packages are missing,
// and returns the node binary.
func requireNodeLwM2M(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found: run `make test` (install nodejs and npm first; it then runs `npm ci --prefix integration/node`)")
	}
	for _, pkg := range []string{"lwm2m-node-lib", "coap"} {
		raw, err := os.ReadFile(filepath.Join(nodeDir, "node_modules", pkg, "package.json"))
		if err != nil {
			t.Fatalf("npm package %s is not installed in integration/node: run `make test` (or `npm ci --prefix integration/node`): %v", pkg, err)
		}
		var meta struct{ Version string }
		_ = json.Unmarshal(raw, &meta)
		t.Logf("independent LwM2M server: %s %s", pkg, meta.Version)
	}
	return node
}

// startLwM2MNodeServer starts integration/node/server.js on a free loopback
// port, with the given flags, and waits until it listens.
func startLwM2MNodeServer(t *testing.T, flags ...string) *lwm2mNodeServer {
	t.Helper()
	node := requireNodeLwM2M(t)
	port := freeUDPPort(t)
	cmd := exec.Command(node, append([]string{filepath.Join(nodeDir, "server.js"), fmt.Sprint(port)}, flags...)...)
	// lwm2m-node-lib and logops read LWM2M_* and LOGOPS_* variables (port,
	// registry type, MongoDB...): none of the caller's may leak in.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LWM2M_") && !strings.HasPrefix(kv, "LOGOPS_") && !strings.HasPrefix(kv, "NODE_OPTIONS=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &lwm2mNodeServer{addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, stdin: stdin}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); s.readEvents(stdout) }()
	go func() { defer readers.Done(); s.readStderr(stderr) }()
	exited := make(chan error, 1)
	go func() {
		readers.Wait() // Wait closes the pipes: read them to the end first
		err := cmd.Wait()
		s.mu.Lock()
		s.exited = true
		s.mu.Unlock()
		exited <- err
	}()
	t.Cleanup(func() {
		_ = stdin.Close() // server.js exits when stdin closes
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	s.waitEvent(t, 15*time.Second, map[string]string{"event": "listening"})
	return s
}

func (s *lwm2mNodeServer) readEvents(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			m = map[string]any{"event": "raw", "raw": sc.Text()}
		}
		s.mu.Lock()
		s.events = append(s.events, m)
		s.mu.Unlock()
	}
}

func (s *lwm2mNodeServer) readStderr(r io.Reader) {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		s.mu.Lock()
		s.stderr = append(s.stderr, buf[:n]...)
		if len(s.stderr) > 8192 {
			s.stderr = s.stderr[len(s.stderr)-8192:]
		}
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Events returns what the server reported so far, oldest first.
func (s *lwm2mNodeServer) Events() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.events...)
}

func (s *lwm2mNodeServer) describe() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, e := range s.events {
		raw, _ := json.Marshal(e)
		b.Write(raw)
		b.WriteByte('\n')
	}
	if s.exited {
		b.WriteString("(server.js has exited)\n")
	}
	fmt.Fprintf(&b, "server.js stderr (tail):\n%s", s.stderr)
	return b.String()
}

// matches reports whether every field of want equals the event's field.
func matches(e map[string]any, want map[string]string) bool {
	for k, v := range want {
		got, ok := e[k]
		if !ok || fmt.Sprint(got) != v {
			return false
		}
	}
	return true
}

// find returns the events matching want.
func (s *lwm2mNodeServer) find(want map[string]string) []map[string]any {
	var out []map[string]any
	for _, e := range s.Events() {
		if matches(e, want) {
			out = append(out, e)
		}
	}
	return out
}

// waitEvent waits up to timeout for an event whose fields equal want.
func (s *lwm2mNodeServer) waitEvent(t *testing.T, timeout time.Duration, want map[string]string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if found := s.find(want); len(found) > 0 {
			return found[0]
		}
		s.mu.Lock()
		exited := s.exited
		s.mu.Unlock()
		if exited || time.Now().After(deadline) {
			t.Fatalf("lwm2m-node-lib server: no event with %v within %s; events:\n%s", want, timeout, s.describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRequest waits up to timeout for a request event, from event index
// from on, whose url contains urlPart, and returns its index.
func (s *lwm2mNodeServer) waitRequest(t *testing.T, timeout time.Duration, from int, urlPart string) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		events := s.Events()
		for i := from; i < len(events); i++ {
			if e := events[i]; e["event"] == "request" && strings.Contains(fmt.Sprint(e["url"]), urlPart) {
				return i
			}
		}
		s.mu.Lock()
		exited := s.exited
		s.mu.Unlock()
		if exited || time.Now().After(deadline) {
			t.Fatalf("lwm2m-node-lib server: no request for %s within %s; events:\n%s", urlPart, timeout, s.describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// read asks the server to Read path on the device registered as ep, the way
// any application on lwm2m-node-lib does (lwm2m.server.read), and returns
// the value or the library's error.
func (s *lwm2mNodeServer) read(t *testing.T, ep, path string) (value, errText string) {
	t.Helper()
	s.mu.Lock()
	s.nextID++
	req := fmt.Sprintf("read-%d", s.nextID)
	s.mu.Unlock()
	cmd, _ := json.Marshal(map[string]string{"req": req, "op": "read", "endpoint": ep, "path": path})
	if _, err := s.stdin.Write(append(cmd, '\n')); err != nil {
		t.Fatalf("lwm2m-node-lib server: sending read: %v\n%s", err, s.describe())
	}
	// node-coap retransmits a CON request for up to ~93 s (EXCHANGE
	// lifetime); a healthy path answers in milliseconds.
	e := s.waitEvent(t, 20*time.Second, map[string]string{"event": "read", "req": req})
	if msg, ok := e["error"]; ok {
		return "", fmt.Sprint(msg)
	}
	return fmt.Sprint(e["value"]), ""
}

// registerDevsim dials the gateway with a fresh device of key k and
// registers it; it returns the device, its location and the registration
// as the node server saw it, after checking what the server recorded.
func registerDevsim(t *testing.T, ctx context.Context, g *gatewayProc, srv *lwm2mNodeServer, k fleetKey) (*devsim.Device, string, map[string]any) {
	t.Helper()
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{
		Server: g.addr.String(), Identity: []byte(k.identity), Key: k.key,
		Endpoint: k.endpoint, Lifetime: 300 * time.Second,
		ACKTimeout: time.Second, MaxRetransmit: 2,
	})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	loc, err := d.Register(ctx)
	if err != nil {
		t.Fatalf("register through the gateway: %v\nnode server:\n%s", err, srv.describe())
	}
	reg := srv.waitEvent(t, 10*time.Second, map[string]string{"event": "registration", "endpoint": k.endpoint})
	if !matches(reg, map[string]string{"lifetime": "300", "version": "1.1", "binding": "U", "address": "127.0.0.1"}) {
		t.Fatalf("registration as the node server saw it: %v", reg)
	}
	for _, link := range []string{"</1/0>", "</3/0>"} {
		if !strings.Contains(fmt.Sprint(reg["payload"]), link) {
			t.Fatalf("registration payload %q lacks %s", reg["payload"], link)
		}
	}
	// The node server saw the gateway's upstream socket for this device,
	// not the device's own address.
	if fmt.Sprint(reg["port"]) == fmt.Sprint(d.LocalAddr().(*net.UDPAddr).Port) {
		t.Fatalf("node server saw the device's own port %v: the gateway did not forward from its upstream socket", reg["port"])
	}
	if want := "/rd/" + fmt.Sprint(reg["id"]); loc != want {
		t.Fatalf("device location %q, want %q", loc, want)
	}
	return d, loc, reg
}

// readThroughGateway: the node server Reads /3/0/0 (the device's value comes
// back through the gateway's upstream socket, L3/L4) and /3/0/99 (the
// device's 4.04 comes back).
func readThroughGateway(t *testing.T, g *gatewayProc, srv *lwm2mNodeServer, d *devsim.Device, ep string) {
	t.Helper()
	served := d.Served()
	value, rerr := srv.read(t, ep, "/3/0/0")
	if rerr != "" || value != "ACME Corp" {
		t.Fatalf("node server read /3/0/0 = %q, error %q; want \"ACME Corp\"\nnode server:\n%s\ngateway logs: %v", value, rerr, srv.describe(), g.logLines())
	}
	if d.Served() <= served {
		t.Fatal("the device never saw the node server's Read")
	}
	if _, rerr := srv.read(t, ep, "/3/0/99"); !strings.Contains(rerr, "RESOURCE_NOT_FOUND") {
		t.Fatalf("node server read /3/0/99: error %q, want RESOURCE_NOT_FOUND (the device's 4.04)", rerr)
	}
}

// interopGatewayConfig is gatewayConfig with the admin listener on a free
// port: the default 127.0.0.1:9090 may be taken on a shared machine.
func interopGatewayConfig(backend net.Addr) string {
	return gatewayConfig(backend) + "admin: {address: \"127.0.0.1:0\"}\n"
}

// TestInteropNodeServerDevsim: a simulated device runs the whole
// registration lifecycle through the real gateway with lwm2m-node-lib's
// server exactly as published: the server sees the endpoint, lifetime,
// version, binding and object links the device sent, accepts the Update,
// Reads /3/0/0 through the gateway's upstream socket and records the
// De-register.
//
// Interop finding, fixed in the gateway: lwm2m-node-lib answers the Register
// with a single Location-Path option "rd/<id>" (RFC 7252 §5.10.7 wants one
// option per segment). The gateway first learned no location from it, so L2
// refused every Update and De-register with 4.03; it now takes a '/' inside
// a backend's Location-Path option as a segment separator (lwm2m.locationOf).
func TestInteropNodeServerDevsim(t *testing.T) {
	srv := startLwM2MNodeServer(t)

	// What the server sends, straight to it (no gateway): one Location-Path.
	if locs := rawRegisterLocationPath(t, srv.addr, "urn:dev:direct-probe"); len(locs) != 1 || !strings.HasPrefix(locs[0], "rd/") {
		t.Fatalf("lwm2m-node-lib's 2.01 Location-Path options %q: no longer one \"rd/<id>\" option; revisit this test", locs)
	}

	k := newFleetKey("interop-devsim", "")
	g := startGateway(t, interopGatewayConfig(srv.addr), keysFile(k))
	ctx := ctxTimeout(t, 60*time.Second)
	d, loc, reg := registerDevsim(t, ctx, g, srv, k)
	readThroughGateway(t, g, srv, d, k.endpoint)

	if err := d.Update(ctx); err != nil {
		t.Fatalf("update through the gateway (location %q): %v\nnode server:\n%s", loc, err, srv.describe())
	}
	upd := srv.waitEvent(t, 10*time.Second, map[string]string{"event": "update", "endpoint": k.endpoint})
	if fmt.Sprint(upd["id"]) != fmt.Sprint(reg["id"]) {
		t.Fatalf("update %v does not match registration %v", upd, reg)
	}
	if err := d.Deregister(ctx); err != nil {
		t.Fatalf("deregister through the gateway: %v\nnode server:\n%s", err, srv.describe())
	}
	srv.waitEvent(t, 10*time.Second, map[string]string{"event": "unregistration", "endpoint": k.endpoint, "reason": "deregister", "id": fmt.Sprint(reg["id"])})
	g.waitLog(t, "registration ended, upstream socket closed", nil)
}

// TestInteropNodeServerDevsimSegmentedLocation: the whole registration
// lifecycle with lwm2m-node-lib's server whose Location-Path is split into
// one option per segment (server.js --split-location-path, the only change
// to the library): Register, an Update accepted for this registration, a
// Read of /3/0/0 through the gateway's upstream socket, and a De-register
// the server records, after which the gateway closes the upstream socket.
func TestInteropNodeServerDevsimSegmentedLocation(t *testing.T) {
	srv := startLwM2MNodeServer(t, "--split-location-path")
	if locs := rawRegisterLocationPath(t, srv.addr, "urn:dev:direct-probe"); len(locs) != 2 || locs[0] != "rd" {
		t.Fatalf("Location-Path options %q, want \"rd\", \"<id>\"", locs)
	}
	k := newFleetKey("interop-devsim-seg", "")
	g := startGateway(t, interopGatewayConfig(srv.addr), keysFile(k))
	ctx := ctxTimeout(t, 60*time.Second)
	d, loc, reg := registerDevsim(t, ctx, g, srv, k)

	if err := d.Update(ctx); err != nil {
		t.Fatalf("update through the gateway (location %q): %v\nnode server:\n%s\ngateway logs: %v", loc, err, srv.describe(), g.logLines())
	}
	upd := srv.waitEvent(t, 10*time.Second, map[string]string{"event": "update", "endpoint": k.endpoint})
	if fmt.Sprint(upd["id"]) != fmt.Sprint(reg["id"]) || fmt.Sprint(upd["port"]) != fmt.Sprint(reg["port"]) {
		t.Fatalf("update %v does not match registration %v", upd, reg)
	}
	readThroughGateway(t, g, srv, d, k.endpoint)

	if err := d.Deregister(ctx); err != nil {
		t.Fatalf("deregister through the gateway: %v\nnode server:\n%s", err, srv.describe())
	}
	srv.waitEvent(t, 10*time.Second, map[string]string{"event": "unregistration", "endpoint": k.endpoint, "reason": "deregister", "id": fmt.Sprint(reg["id"])})
	g.waitLog(t, "registration ended, upstream socket closed", nil)
}

// rawRegisterLocationPath sends a Register for ep straight to the LwM2M
// server over plain CoAP and returns the Location-Path options of its 2.01.
func rawRegisterLocationPath(t *testing.T, server *net.UDPAddr, ep string) []string {
	t.Helper()
	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, server)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 0x4242, Token: []byte{0x42, 0x42}, Payload: []byte("</3/0>")}
	req.Options = message.Options{
		{ID: message.URIPath, Value: []byte("rd")},
		{ID: message.ContentFormat, Value: []byte{40}},
		{ID: message.URIQuery, Value: []byte("ep=" + ep)},
		{ID: message.URIQuery, Value: []byte("lt=300")},
		{ID: message.URIQuery, Value: []byte("lwm2m=1.1")},
	}
	size, err := coder.DefaultCoder.Size(req)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, size)
	if _, err := coder.DefaultCoder.Encode(req, out); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for attempt := 0; attempt < 3; attempt++ {
		if _, err := conn.Write(out); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				break // timeout: retransmit
			}
			resp := message.Message{Options: make(message.Options, 0, 32)}
			if _, err := coder.DefaultCoder.Decode(buf[:n], &resp); err != nil || resp.Code == codes.Empty {
				continue // a bare ACK: the response comes separately
			}
			if resp.Code != codes.Created {
				t.Fatalf("direct Register: %v, want 2.01", resp.Code)
			}
			var locs []string
			for _, o := range resp.Options {
				if o.ID == message.LocationPath {
					locs = append(locs, string(o.Value))
				}
			}
			return locs
		}
	}
	t.Fatalf("direct Register: no answer from the LwM2M server at %s", server)
	return nil
}

// TestInteropNodeServerLibcoapClientL1: libcoap's coap-client-gnutls as a
// minimal LwM2M client (a Register with the object links) and lwm2m-node-lib
// as the server, the gateway between them — neither peer written here. The
// bound endpoint registers; another endpoint gets 4.03 from the gateway
// itself and the node server hears nothing of it (L1).
func TestInteropNodeServerLibcoapClientL1(t *testing.T) {
	bin := requireTool(t, "coap-client-gnutls")
	srv := startLwM2MNodeServer(t)
	key := randomText(32)
	const identity = "interop-libcoap"
	const endpoint = "urn:dev:interop-libcoap"
	const other = "urn:dev:someone-else"
	keys := fmt.Sprintf(`keys:
  - identity: %q
    key_base64: %q
    endpoint: %q
    allow_low_entropy: true   # a text key (libcoap's -k): DTLS 1.2 ECDHE-PSK
`, identity, base64.StdEncoding.EncodeToString(key), endpoint)
	g := startGateway(t, interopGatewayConfig(srv.addr), keys)
	register := func(ep string) string {
		uri := fmt.Sprintf("coaps://127.0.0.1:%d/rd?ep=%s&lt=300&lwm2m=1.1&b=U", g.addr.Port, ep)
		return coapClient(t, bin, identity, key, "-m", "post", "-t", "40", "-e", "</1/0>,</3/0>", uri)
	}

	t.Run("bound endpoint registers", func(t *testing.T) {
		out := register(endpoint)
		if strings.Contains(out, "4.") || strings.Contains(out, "5.") {
			t.Fatalf("coap-client: %q\nnode server:\n%s", out, srv.describe())
		}
		reg := srv.waitEvent(t, 10*time.Second, map[string]string{"event": "registration", "endpoint": endpoint})
		if !matches(reg, map[string]string{"lifetime": "300", "version": "1.1", "binding": "U", "payload": "</1/0>,</3/0>", "address": "127.0.0.1"}) {
			t.Fatalf("registration as the node server saw it: %v", reg)
		}
		g.waitLog(t, "session established", map[string]string{"version": "dtls1.2", "suite": "TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256"})
	})

	t.Run("other endpoint L1 4.03", func(t *testing.T) {
		before := len(srv.Events())
		out := register(other)
		if !strings.Contains(out, "4.03") {
			t.Fatalf("coap-client output %q, want 4.03 from the gateway", out)
		}
		g.waitLog(t, "request refused", map[string]string{"rule": "L1", "code": "Forbidden"})
		// A marker instead of a wait: the bound endpoint registers again.
		// Loopback delivers datagrams in the order they are sent, and the
		// gateway refused the Register before coap-client returned, so a
		// Register it had wrongly forwarded would reach the node server
		// before the marker's.
		if out := register(endpoint); strings.Contains(out, "4.") || strings.Contains(out, "5.") {
			t.Fatalf("marker Register: %q", out)
		}
		marker := srv.waitRequest(t, 10*time.Second, before, "ep="+endpoint)
		if found := srv.find(map[string]string{"endpoint": other}); len(found) > 0 {
			t.Fatalf("L1: the node server saw the refused endpoint: %v", found)
		}
		// Before the marker's request, only the marker's own events (the
		// library reports its registration first).
		for _, e := range srv.Events()[before:marker] {
			if e["endpoint"] != endpoint {
				t.Fatalf("L1: the node server saw something after a refused Register: %v", e)
			}
		}
	})
}
