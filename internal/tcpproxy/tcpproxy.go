// Package tcpproxy is a test aid: a loopback TCP proxy that can simulate a
// database going away — refusing connections, or accepting them and never
// answering (a black hole) — and coming back on the same address. The store
// tests and the gateway's outage tests share it.
package tcpproxy

import (
	"fmt"
	"io"
	"net"
	"sync"
)

// Proxy forwards every connection it accepts to the connection Dial opens.
// Safe for concurrent use.
type Proxy struct {
	addr string
	dial func() (net.Conn, error)

	mu    sync.Mutex
	ln    net.Listener
	stall bool
	conns map[net.Conn]struct{}
}

// New listens on a free 127.0.0.1 port and forwards to dial's connections.
func New(dial func() (net.Conn, error)) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{addr: ln.Addr().String(), dial: dial, conns: make(map[net.Conn]struct{})}
	p.serve(ln)
	return p, nil
}

// Addr is the proxy's host:port; it stays the same across Down and Up.
func (p *Proxy) Addr() string { return p.addr }

// Down closes the port and every connection: clients get "connection refused".
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.breakAll()
}

// Blackhole breaks every connection, then accepts new ones and never answers.
func (p *Proxy) Blackhole() error {
	p.mu.Lock()
	p.stall = true
	p.breakAll()
	p.mu.Unlock()
	return p.listen()
}

// Up forwards again, reopening the port on the same address if needed.
func (p *Proxy) Up() error {
	p.mu.Lock()
	p.stall = false
	p.mu.Unlock()
	return p.listen()
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[c] = struct{}{}
			stall := p.stall
			p.mu.Unlock()
			if !stall {
				go p.forward(c)
			}
		}
	}()
}

func (p *Proxy) forward(c net.Conn) {
	s, err := p.dial()
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[s] = struct{}{}
	p.mu.Unlock()
	go func() { _, _ = io.Copy(s, c); _ = s.Close(); _ = c.Close() }()
	_, _ = io.Copy(c, s)
	_ = s.Close()
	_ = c.Close()
}

// breakAll closes every connection; the caller holds mu.
func (p *Proxy) breakAll() {
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// listen reopens the port on the same address if it is closed.
func (p *Proxy) listen() error {
	p.mu.Lock()
	open := p.ln != nil
	p.mu.Unlock()
	if open {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("tcpproxy: listening again on %s: %w", p.addr, err)
	}
	p.serve(ln)
	return nil
}
