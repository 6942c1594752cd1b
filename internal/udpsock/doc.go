// Package udpsock is a UDP socket and the system calls of an event loop
// that waits on epoll itself, kept out of Go's runtime network poller and
// made as raw system calls (raw_linux.go says why). The gateway's
// listeners and upstream sockets use it, and so does bench/floor, the
// benchmark's plain relay: the floor pays the same per-datagram kernel
// costs as the gateway, no more. Linux only; elsewhere the gateway uses
// net.UDPConn.
package udpsock
