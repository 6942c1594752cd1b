//go:build !linux

package main

import (
	"errors"
	"net/netip"
)

type relay struct{}

func newRelay(netip.AddrPort, netip.AddrPort) (*relay, error) {
	return nil, errors.New("needs Linux (epoll)")
}

func (*relay) loop() error { return nil }
