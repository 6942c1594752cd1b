package main

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
)

// Backend kinds of --backend-kind.
const (
	backendLwM2M = "lwm2m" // devsim.Backend: registrations, Read, Observe
	backendEcho  = "echo"  // CoAP echo: every request answered 2.05 with its own bytes
)

// embeddedBackend is the backend server the tool runs itself, so that
// backend-initiated traffic (Read, Observe) can be driven and measured, and
// so the gateway has something to forward raw requests to.
type embeddedBackend struct {
	lwm2m *devsim.Backend // kind lwm2m
	echo  *echoServer     // kind echo
}

func startBackend(kind, addr string) (*embeddedBackend, error) {
	switch kind {
	case backendLwM2M:
		b, err := devsim.NewBackend(addr, nil)
		if err != nil {
			return nil, err
		}
		return &embeddedBackend{lwm2m: b}, nil
	case backendEcho:
		e, err := newEchoServer(addr)
		if err != nil {
			return nil, err
		}
		return &embeddedBackend{echo: e}, nil
	}
	return nil, fmt.Errorf("--backend-kind %q: want %s or %s", kind, backendLwM2M, backendEcho)
}

func (b *embeddedBackend) Addr() net.Addr {
	if b.lwm2m != nil {
		return b.lwm2m.Addr()
	}
	return b.echo.conn.LocalAddr()
}

func (b *embeddedBackend) Close() error {
	if b.lwm2m != nil {
		return b.lwm2m.Close()
	}
	return b.echo.Close()
}

// echoServer answers every CoAP datagram with the same bytes, a
// confirmable message turned into its ACK and a request code into 2.05
// Content: same size, same Message ID and token, so the answer is a valid
// piggybacked response (RFC 7252 §5.2.1) of the same length as the request.
type echoServer struct {
	conn   *net.UDPConn
	served atomic.Int64
	done   chan struct{}
	once   sync.Once
}

func newEchoServer(addr string) (*echoServer, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	_ = conn.SetReadBuffer(4 << 20)
	e := &echoServer{conn: conn, done: make(chan struct{})}
	go e.serve()
	return e, nil
}

func (e *echoServer) serve() {
	defer close(e.done)
	buf := make([]byte, 65536)
	for {
		n, from, err := e.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil || n < 4 || buf[0]>>6 != 1 {
			continue
		}
		echoAnswer(buf[:n])
		e.served.Add(1)
		_, _ = e.conn.WriteToUDPAddrPort(buf[:n], from)
	}
}

// echoAnswer turns a CoAP message into the echo server's answer in place.
func echoAnswer(p []byte) {
	const typeCON, typeACK = 0, 2
	if (p[0]>>4)&3 == typeCON {
		p[0] = p[0]&^0x30 | typeACK<<4
	}
	if code := p[1]; code > 0 && code < 32 { // a method code (RFC 7252 §12.1.1)
		p[1] = 2<<5 | 5 // 2.05 Content
	}
}

func (e *echoServer) Close() error {
	var err error
	e.once.Do(func() {
		err = e.conn.Close()
		<-e.done
	})
	return err
}
