package devsim

import (
	"fmt"
	"net"
	"sync"
)

// Balancer is a test L4 UDP load balancer in front of gateway replicas:
// devices send to its address; it forwards each device's flow from a socket
// of its own to the current target and the answers back, like kube-proxy's
// NAT. Retargeting rehashes every flow: the new target sees a new source
// address, as a replica does when the balancer moves a device to it.
type Balancer struct {
	pc *net.UDPConn

	mu     sync.Mutex
	target *net.UDPAddr
	flows  map[string]*net.UDPConn // device address > target
	closed bool
}

// NewBalancer listens on a loopback port and forwards to target.
func NewBalancer(target *net.UDPAddr) (*Balancer, error) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("devsim: balancer: %w", err)
	}
	b := &Balancer{pc: pc, target: target, flows: map[string]*net.UDPConn{}}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if up := b.flow(from); up != nil {
				_, _ = up.Write(buf[:n])
			}
		}
	}()
	return b, nil
}

// Addr is where devices send.
func (b *Balancer) Addr() *net.UDPAddr { return b.pc.LocalAddr().(*net.UDPAddr) }

// Retarget sends every device's next datagram to another replica.
func (b *Balancer) Retarget(to *net.UDPAddr) {
	b.mu.Lock()
	b.target = to
	b.mu.Unlock()
}

// Close stops forwarding.
func (b *Balancer) Close() error {
	err := b.pc.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, c := range b.flows {
		_ = c.Close()
	}
	return err
}

func (b *Balancer) flow(device *net.UDPAddr) *net.UDPConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	key := device.String() + ">" + b.target.String()
	if c := b.flows[key]; c != nil || b.closed {
		return c
	}
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, b.target)
	if err != nil {
		return nil
	}
	b.flows[key] = c
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			_, _ = b.pc.WriteToUDP(buf[:n], device)
		}
	}()
	return c
}
