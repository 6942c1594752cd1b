package gateway

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

func encodeCoAP(t *testing.T, m message.Message) []byte {
	t.Helper()
	buf := make([]byte, 1500)
	n, err := coder.DefaultCoder.Encode(m, buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func decodeCoAP(t *testing.T, p []byte) message.Message {
	t.Helper()
	m := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(p, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestBootstrapThenRegisterTwoBackends: through one gateway, a device sends
// its Bootstrap-Request to the bootstrap server, answers that server's own
// request there, then registers with the device-management server. Each
// backend sees only its own traffic, on its own upstream socket.
func TestBootstrapThenRegisterTwoBackends(t *testing.T) {
	dm, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dm.Close()
	bs, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	k := testKey("fresh-device", 1)
	k.Endpoint, k.Backend = "urn:dev:fresh", "dm"
	_, addr := startServer(t, Config{Store: newMapStore(k),
		Backends:         map[string]string{"dm": dm.Addr().String(), "bs": bs.LocalAddr().String()},
		DefaultBackend:   "dm",
		BootstrapBackend: "bs"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: addr.String(), Identity: k.Identity, Key: k.Secret, Endpoint: k.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// The bootstrap server answers the Bootstrap-Request, then reads the
	// device's manufacturer (a server-initiated request).
	bsDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		_ = bs.SetReadDeadline(time.Now().Add(8 * time.Second))
		n, from, err := bs.ReadFromUDP(buf)
		if err != nil {
			bsDone <- err
			return
		}
		req := decodeCoAP(t, buf[:n])
		if req.Code != codes.POST || !bytes.Contains(buf[:n], []byte("bs")) {
			bsDone <- errUnexpected("bootstrap request", req.Code)
			return
		}
		_, _ = bs.WriteToUDP(encodeCoAP(t, message.Message{Type: message.Acknowledgement, Code: codes.Changed, MessageID: req.MessageID, Token: req.Token}), from)
		read := message.Message{Type: message.Confirmable, Code: codes.GET, MessageID: 777, Token: []byte{9, 9}}
		read.Options = read.Options.Add(message.Option{ID: message.URIPath, Value: []byte("3")})
		read.Options = read.Options.Add(message.Option{ID: message.URIPath, Value: []byte("0")})
		read.Options = read.Options.Add(message.Option{ID: message.URIPath, Value: []byte("0")})
		_, _ = bs.WriteToUDP(encodeCoAP(t, read), from)
		n, _, err = bs.ReadFromUDP(buf)
		if err != nil {
			bsDone <- err
			return
		}
		ack := decodeCoAP(t, buf[:n])
		if ack.MessageID != 777 || ack.Code != codes.Content {
			bsDone <- errUnexpected("answer to the bootstrap server's read", ack.Code)
			return
		}
		bsDone <- nil
	}()
	if err := d.BootstrapRequest(ctx); err != nil {
		t.Fatalf("bootstrap request: %v", err)
	}
	if err := <-bsDone; err != nil {
		t.Fatal(err)
	}
	if _, err := d.Register(ctx); err != nil {
		t.Fatalf("register with the DM server: %v", err)
	}
	if v, err := dm.Read(ctx, k.Endpoint, "/3/0/0"); err != nil || len(v) == 0 {
		t.Fatalf("DM read: %q %v", v, err)
	}
	for _, r := range dm.Received() {
		if r.Path == "/bs" {
			t.Fatal("the DM server received the Bootstrap-Request")
		}
	}
}

type unexpectedError struct {
	what string
	code codes.Code
}

func (e unexpectedError) Error() string { return "unexpected " + e.what + ": " + e.code.String() }

func errUnexpected(what string, code codes.Code) error { return unexpectedError{what, code} }

// TestRoutingByKeySNIAndListener: an identity's traffic goes to the backend
// its key names; otherwise to the backend mapped from the handshake's server
// name; otherwise to its listener's backend.
func TestRoutingByKeySNIAndListener(t *testing.T) {
	a, b, c := newEchoBackend(t), newEchoBackend(t), newEchoBackend(t)
	named, bySNI, byListener := testKey("named", 1), testKey("sni", 2), testKey("listener", 3)
	named.Backend = "a"
	srv, _ := startServer(t, Config{Store: newMapStore(named, bySNI, byListener),
		Backends:           map[string]string{"a": a.pc.LocalAddr().String(), "b": b.pc.LocalAddr().String(), "c": c.pc.LocalAddr().String()},
		DefaultBackend:     "a",
		ServerNameBackends: map[string]string{"bs.example": "b"},
		Listeners:          []Listener{{Address: "127.0.0.1:0", Backend: "c"}}})
	addr := srv.Addrs()[0].(*net.UDPAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		c    client
		want *echoBackend
	}{
		{client{id: named.Identity, key: named.Secret, serverName: "bs.example"}, a},
		{client{id: bySNI.Identity, key: bySNI.Secret, serverName: "BS.example"}, b},
		{client{id: byListener.Identity, key: byListener.Secret}, c},
	} {
		conn, err := tc.c.dial(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		before := len(tc.want.sources())
		roundTrip(t, conn, []byte(string(tc.c.id)))
		conn.Close()
		if len(tc.want.sources()) != before+1 {
			t.Fatalf("%s went to the wrong backend", tc.c.id)
		}
	}
}
