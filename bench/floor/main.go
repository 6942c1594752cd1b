// Command floor is the forwarding floor of the benchmarks: the least a
// relay between devices and a backend can cost per request and response on
// this machine. It does what the gateway's data path cannot avoid and
// nothing else:
//
//   - two UDP hops: one socket faces the devices; each device gets its own
//     connected upstream socket to the backend on its first datagram (the
//     backend sees one address per device, as behind the gateway);
//   - one epoll loop over every socket, level-triggered: the device-facing
//     socket read with recvmmsg (up to 16 datagrams a call), each upstream
//     socket with one read per readiness, one write per datagram; no
//     goroutine per device, no hand-off between goroutines; the loop parks
//     in the Go runtime's poller, waiting for the epoll descriptor, and its
//     system calls are raw ones the runtime is not told about: the same
//     socket code as the gateway's (internal/udpsock), so the floor pays
//     the same kernel costs per datagram and none of Go's;
//   - AES-128-GCM: every datagram relayed is sealed and opened once, so a
//     request and its response cost two seals and two opens (a DTLS relay
//     opens the request and seals the response: one of each, plus the
//     record-number mask in DTLS 1.3).
//
// The traffic is plain UDP (devsim --raw --no-dtls), so CPU time of this
// process per request is the floor the gateway's CPU per request is held
// to (bench/BENCHMARKS.md). Written by hand on internal/udpsock and
// golang.org/x/sys/unix because the floor is the raw syscalls: a library
// would add what it measures.
//
//	floor --listen 127.0.0.1:5684 --backend 127.0.0.1:5683
//
// It prints "listening ADDR" once bound and runs until SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:5684", "UDP address facing the devices")
	backend := flag.String("backend", "", "UDP address of the backend (required)")
	flag.Parse()
	if err := run(*listen, *backend); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(listen, backend string) error {
	la, err := netip.ParseAddrPort(listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	ba, err := netip.ParseAddrPort(backend)
	if err != nil {
		return fmt.Errorf("--backend: %w", err)
	}
	r, err := newRelay(la, ba)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", la)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- r.loop() }()
	select {
	case <-sig:
		return nil
	case err := <-errc:
		return err
	}
}
