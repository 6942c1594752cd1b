package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// blockValue encodes a Block1/Block2 option value (RFC 7959 §2.2).
func blockValue(num uint32, more bool, szx uint32) uint32 {
	v := num<<4 | szx
	if more {
		v |= 1 << 3
	}
	return v
}

// blockServer is a minimal CoAP server for firmware-style transfers: GET
// /fw serves image with Block2, POST /upload collects Block1 blocks.
type blockServer struct {
	pc       *net.UDPConn
	image    []byte
	uploaded chan []byte
}

func newBlockServer(t *testing.T, image []byte) *blockServer {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &blockServer{pc: pc, image: image, uploaded: make(chan []byte, 1)}
	t.Cleanup(func() { _ = pc.Close() })
	go s.serve(t)
	return s
}

func (s *blockServer) serve(t *testing.T) {
	buf := make([]byte, 4096)
	var upload []byte
	for {
		n, from, err := s.pc.ReadFromUDP(buf)
		if err != nil {
			return
		}
		req := decodeCoAP(t, buf[:n])
		resp := message.Message{Type: message.Acknowledgement, MessageID: req.MessageID, Token: req.Token}
		switch req.Code {
		case codes.GET:
			v, _ := req.Options.GetUint32(message.Block2)
			num, szx := v>>4, v&7
			size := 1 << (szx + 4)
			start := int(num) * size
			end := min(start+size, len(s.image))
			resp.Code = codes.Content
			resp.Options = resp.Options.Add(message.Option{ID: message.Block2, Value: encodeUint(blockValue(num, end < len(s.image), szx))})
			resp.Payload = s.image[start:end]
		case codes.POST:
			v, _ := req.Options.GetUint32(message.Block1)
			upload = append(upload, req.Payload...)
			resp.Options = resp.Options.Add(message.Option{ID: message.Block1, Value: encodeUint(v)})
			if v&(1<<3) != 0 {
				resp.Code = codes.Continue
			} else {
				resp.Code = codes.Changed
				s.uploaded <- upload
				upload = nil
			}
		}
		_, _ = s.pc.WriteToUDP(encodeCoAP(t, resp), from)
	}
}

func encodeUint(v uint32) []byte {
	switch {
	case v == 0:
		return nil
	case v < 1<<8:
		return []byte{byte(v)}
	case v < 1<<16:
		return []byte{byte(v >> 8), byte(v)}
	}
	return []byte{byte(v >> 16), byte(v >> 8), byte(v)}
}

// TestBlockwiseAndObserveEndToEnd (L4): a 200 KB firmware image pulled with
// Block2 in 1024-byte blocks, a Block1 upload, and an Observe with 100
// notifications, all byte-identical through the gateway.
func TestBlockwiseTransfersEndToEnd(t *testing.T) {
	image := make([]byte, 200*1024+123)
	_, _ = rand.Read(image)
	blocks := newBlockServer(t, image)
	k := testKey("fw", 1)
	k.Endpoint = "urn:dev:fw"
	_, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": blocks.pc.LocalAddr().String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: addr.String(), Identity: k.Identity, Key: k.Secret, Endpoint: k.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	var got []byte
	for num := uint32(0); ; num++ {
		req := pool.NewMessage(ctx)
		req.SetCode(codes.GET)
		_ = req.SetPath("/fw")
		req.SetMessageID(-1)
		req.SetOptionUint32(message.Block2, blockValue(num, false, 6))
		resp, err := d.Do(ctx, req)
		if err != nil {
			t.Fatalf("block %d: %v", num, err)
		}
		body, _ := resp.ReadBody()
		got = append(got, body...)
		v, err := resp.GetOptionUint32(message.Block2)
		if err != nil {
			t.Fatalf("block %d without Block2", num)
		}
		if v&(1<<3) == 0 {
			break
		}
	}
	if !bytes.Equal(got, image) {
		t.Fatalf("firmware differs: got %d bytes, want %d", len(got), len(image))
	}

	upload := make([]byte, 5000)
	_, _ = rand.Read(upload)
	for num := 0; num*1024 < len(upload); num++ {
		end := min((num+1)*1024, len(upload))
		req := pool.NewMessage(ctx)
		req.SetCode(codes.POST)
		_ = req.SetPath("/upload")
		req.SetMessageID(-1)
		req.SetOptionUint32(message.Block1, blockValue(uint32(num), end < len(upload), 6))
		req.SetBody(bytes.NewReader(upload[num*1024 : end]))
		if _, err := d.Do(ctx, req); err != nil {
			t.Fatalf("upload block %d: %v", num, err)
		}
	}
	select {
	case u := <-blocks.uploaded:
		if !bytes.Equal(u, upload) {
			t.Fatal("uploaded bytes differ")
		}
	case <-ctx.Done():
		t.Fatal("upload never completed")
	}
}

func TestObserveHundredNotifications(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	k := testKey("observed", 1)
	k.Endpoint = "urn:dev:observed"
	_, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.Addr().String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: addr.String(), Identity: k.Identity, Key: k.Secret, Endpoint: k.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Register(ctx); err != nil {
		t.Fatal(err)
	}
	notes, err := backend.Observe(ctx, k.Endpoint, "/3/0/9")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		want := []byte(fmt.Sprintf("battery=%d", i))
		if err := d.Notify(ctx, want); err != nil {
			t.Fatalf("notify %d: %v", i, err)
		}
		select {
		case got := <-notes:
			if !bytes.Equal(got, want) {
				t.Fatalf("notify %d: got %q want %q", i, got, want)
			}
		case <-ctx.Done():
			t.Fatalf("notify %d never arrived", i)
		}
	}
}

// TestQueueModeDeviceAfterNATTimeout: a queue-mode device (b=UQ) is silent
// longer than its NAT binding lasts; the backend's Read meanwhile goes to the
// dead binding and is retransmitted; the device's next Update comes from a
// new port (CID keeps the session) and the retransmitted Read reaches it.
func TestQueueModeDeviceAfterNATTimeout(t *testing.T) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	k := testKey("sleeper", 1)
	k.Endpoint = "urn:dev:sleeper"
	_, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.Addr().String()}})
	relay := newNATRelay(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: relay.dev.LocalAddr().String(), Identity: k.Identity, Key: k.Secret,
		Endpoint: k.Endpoint, Binding: "UQ"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if r, _ := backend.Registration(k.Endpoint); r.Binding != "UQ" {
		t.Fatalf("binding %q", r.Binding)
	}
	relay.rebind() // the NAT binding expired while the device slept
	readDone := make(chan error, 1)
	go func() {
		v, err := backend.Read(ctx, k.Endpoint, "/3/0/0")
		if err == nil && len(v) == 0 {
			err = fmt.Errorf("empty read")
		}
		readDone <- err
	}()
	time.Sleep(500 * time.Millisecond) // the first transmission is lost
	if err := d.Update(ctx); err != nil {
		t.Fatalf("update from the new binding: %v", err)
	}
	if err := <-readDone; err != nil {
		t.Fatalf("backend read never reached the woken device: %v", err)
	}
}
