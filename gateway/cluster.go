package gateway

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-gateway/gateway/statestore"
	"go.uber.org/zap"
)

// Replicas (DESIGN §1 "Past one machine"): several gateways behind a plain
// L4 UDP load balancer share one PostgreSQL store. Each replica owns its
// sessions; the store keeps their sealed snapshots with their owner and
// each replica's lease. The first byte of every Connection ID a replica
// issues is its id, so a record that a rebalanced load balancer delivers
// to another replica still names its owner:
//
//   - owner alive (lease running): the receiving replica relays the
//     datagram to the owner over the replicas' link (UDP, each datagram
//     sealed with a key derived from the KEK and timestamped, so nobody
//     else can make a replica send), and the owner answers through it, so
//     the device keeps seeing the address it sends to;
//   - owner dead (lease run out): the receiving replica takes the session
//     over — atomically in the store, so one replica wins — restoring its
//     snapshot above the owner's last reservation, with a fresh upstream
//     socket (the backend sees the device's new address at its next
//     Update).
//
// Fencing: a replica that cannot renew its lease stops sealing records of
// its persisted sessions before the lease can run out in the store, and
// ends them silently, so a session is never sealed by two replicas at once
// (no nonce reuse); when the store answers again it restores those it still
// owns. The existing engines do the work (PostgreSQL for ownership and
// leases, the load balancer for distribution); there is no consensus of the
// gateway's own.

// Cluster is what the gateway needs from the store replicas share;
// statestore/postgres implements it (and SessionStore).
type Cluster interface {
	Heartbeat(ctx context.Context, addr string, lease time.Duration) (time.Time, error)
	Replicas(ctx context.Context) ([]statestore.Replica, error)
	TakeOver(ctx context.Context, cid []byte) (statestore.Snapshot, error)
}

type peer struct {
	addr  netip.AddrPort
	alive bool
}

// cluster is a replica's part in the cluster.
type cluster struct {
	srv   *Server
	store Cluster
	id    byte
	link  *net.UDPConn
	lease time.Duration

	fenceAt atomic.Int64 // unix ns: persisted sessions seal only before it
	fenced  atomic.Bool  // the sessions were ended for want of a lease

	mu       sync.RWMutex
	peers    map[byte]peer
	inflight map[string]bool // takeovers queued or running, by CID
	work     chan []byte     // CIDs to take over
}

// linkMaxAge bounds how old a link datagram may be (its timestamp).
const linkMaxAge = 30 * time.Second

func newCluster(srv *Server) *cluster {
	return &cluster{srv: srv, store: srv.cfg.Cluster, id: byte(srv.cfg.ReplicaID), lease: srv.cfg.Lease,
		peers: map[byte]peer{}, inflight: map[string]bool{}, work: make(chan []byte, 256)}
}

// mayServe reports whether persisted sessions may seal now.
func (c *cluster) mayServe() bool { return time.Now().UnixNano() < c.fenceAt.Load() }

// beat renews the lease and refreshes the peers; it fences the replica
// when the lease could not be renewed in time, and recovers its sessions
// once it can again.
func (c *cluster) beat() {
	srv := c.srv
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), c.lease/3)
	defer cancel()
	_, err := c.store.Heartbeat(ctx, srv.linkAddr(), c.lease)
	if err == nil {
		// The store's lease runs from a moment after start: ending a fifth
		// early leaves room for clock rates and the write's latency.
		c.fenceAt.Store(start.Add(c.lease - c.lease/5).UnixNano())
		if reps, err := c.store.Replicas(ctx); err == nil {
			peers := make(map[byte]peer, len(reps))
			for _, r := range reps {
				ap, _ := netip.ParseAddrPort(r.Address)
				peers[byte(r.ID)] = peer{addr: ap, alive: r.Alive}
			}
			c.mu.Lock()
			c.peers = peers
			c.mu.Unlock()
		}
		if c.fenced.CompareAndSwap(true, false) {
			srv.log.Warn("replica lease renewed: restoring the sessions it still owns")
			rctx, rcancel := context.WithTimeout(context.Background(), restoreTimeout)
			srv.restore(rctx)
			rcancel()
		}
		return
	}
	srv.sampled.Error("cannot renew the replica lease", zap.Error(err))
	if !c.mayServe() && c.fenced.CompareAndSwap(false, true) {
		srv.stats.fences.Add(1)
		n := 0
		for _, s := range srv.table.snapshot() {
			s.mu.Lock()
			persisted := s.limit != 0
			s.mu.Unlock()
			if persisted {
				s.closeKeepingSnapshot("replica lease lost")
				n++
			}
		}
		srv.log.Error("replica lease lost: persisted sessions ended silently; other replicas may take them over",
			zap.Int("sessions", n))
	}
}

// run renews the lease every third of it, and takes sessions over as the
// listeners ask, until stop.
func (c *cluster) run(stop <-chan struct{}) {
	t := time.NewTicker(c.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			c.beat()
		case cid := <-c.work:
			c.takeOver(cid)
		}
	}
}

// forward handles a record whose Connection ID names another replica: it is
// relayed to the owner while the owner's lease runs, or the session is
// taken over (asynchronously: this datagram is dropped, the device's
// retransmission finds the session).
func (c *cluster) forward(l *listener, p []byte, from netip.AddrPort, cid []byte) {
	c.mu.RLock()
	pr, ok := c.peers[cid[0]]
	c.mu.RUnlock()
	if ok && pr.alive && pr.addr.IsValid() {
		c.srv.stats.relayed.Add(1)
		c.send(pr.addr, linkToOwner, l.index, from, p)
		return
	}
	c.mu.Lock()
	if !c.inflight[string(cid)] {
		select {
		case c.work <- append([]byte(nil), cid...):
			c.inflight[string(cid)] = true
		default:
		}
	}
	c.mu.Unlock()
	c.srv.stats.drop(dropTakingOver)
}

// takeOver claims the session of cid from its dead owner and restores it.
func (c *cluster) takeOver(cid []byte) {
	defer func() {
		c.mu.Lock()
		delete(c.inflight, string(cid))
		c.mu.Unlock()
	}()
	srv := c.srv
	if r := srv.table.byCID(cid); r.s != nil {
		return // taken over meanwhile
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.lease)
	defer cancel()
	snap, err := c.store.TakeOver(ctx, cid)
	if errors.Is(err, statestore.ErrNotTaken) {
		return
	}
	if err != nil {
		srv.sampled.Warn("session takeover failed", zap.Error(err))
		return
	}
	if err := srv.restoreOne(snap); err != nil {
		return // refused and counted by restoreOne
	}
	srv.stats.takeovers.Add(1)
	srv.log.Info("session taken over from a replica whose lease ran out",
		zap.String("identity_tag", srv.tag(snap.Identity)), zap.Uint8("owner", cid[0]))
}

// Link datagram kinds.
const (
	linkToOwner  byte = 1 // a device's datagram, received by the sender
	linkToDevice byte = 2 // a datagram for the sender to write to a device
)

// send seals and sends one link datagram.
func (c *cluster) send(to netip.AddrPort, kind byte, listener int, device netip.AddrPort, p []byte) {
	b := make([]byte, 0, 32+len(p))
	b = append(b, kind)
	b = appendUint64(b, uint64(time.Now().UnixNano()))
	b = append(b, byte(listener))
	da := device.String()
	b = append(b, byte(len(da)))
	b = append(b, da...)
	b = append(b, p...)
	sealed := c.srv.cfg.LinkSealer.Seal([]byte(linkContext), b)
	if _, err := c.link.WriteToUDPAddrPort(sealed, to); err != nil {
		c.srv.sampled.Warn("write to replica link", zap.Stringer("peer", to), zap.Error(err))
	}
}

// linkContext is the associated data of link datagrams.
const linkContext = "gateway replica link v1"

// serveLink reads the link until it is closed.
func (c *cluster) serveLink() {
	srv := c.srv
	buf := make([]byte, 65536)
	for {
		n, from, err := c.link.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		plain, err := srv.cfg.LinkSealer.Open([]byte(linkContext), buf[:n])
		if err != nil || len(plain) < 11 {
			srv.stats.drop(dropBadLink)
			continue
		}
		kind, ts, idx := plain[0], int64(readUint64(plain[1:9])), int(plain[9])
		alen := int(plain[10])
		if d := time.Since(time.Unix(0, ts)); d > linkMaxAge || d < -linkMaxAge || len(plain) < 11+alen || idx >= len(srv.listeners) {
			srv.stats.drop(dropBadLink)
			continue
		}
		device, err := netip.ParseAddrPort(string(plain[11 : 11+alen]))
		if err != nil {
			srv.stats.drop(dropBadLink)
			continue
		}
		l, payload := srv.listeners[idx], plain[11+alen:]
		switch kind {
		case linkToOwner:
			l.routeRelayed(payload, device, unmapped(from))
		case linkToDevice:
			if _, err := l.pc.WriteToUDPAddrPort(payload, device); err != nil {
				srv.sampled.Warn("write to device for a replica", zap.Error(err))
			}
		default:
			srv.stats.drop(dropBadLink)
		}
	}
}

// routeRelayed handles a device's datagram another replica received and
// relayed: only records of sessions this replica owns, found by their
// Connection ID; answers go back through that replica (session.via).
func (l *listener) routeRelayed(p []byte, device, via netip.AddrPort) {
	srv := l.srv
	cid := recordCID(p, srv.cfg.CIDLength)
	if cid == nil {
		srv.stats.drop(dropUnknownCID)
		return
	}
	r := srv.table.byCID(cid)
	if r.s == nil || r.s.l != l {
		srv.stats.drop(dropUnknownCID)
		return
	}
	r.s.fromRelay(p, device, via)
}

func appendUint64(b []byte, v uint64) []byte {
	return append(b, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func readUint64(b []byte) uint64 {
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}
