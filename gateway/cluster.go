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
	// Heartbeat renews this process's lease of its replica id;
	// statestore.ErrReplicaInUse while another live process holds it.
	Heartbeat(ctx context.Context, addr string, lease time.Duration) (time.Time, error)
	// Release lets the next process with this replica id renew the lease
	// at once (a graceful handoff); the lease runs on until then.
	Release(ctx context.Context) error
	Replicas(ctx context.Context) ([]statestore.Replica, error)
	// Owner is the replica that owns cid's session now, and whether its
	// lease runs (a taken-over session keeps the CIDs that name its first
	// owner).
	Owner(ctx context.Context, cid []byte) (owner int, alive bool, err error)
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
	moved    map[string]byte // CID -> its session's owner, when not the replica it names
	inflight map[string]bool // lookups queued or running, by CID
	work     chan []byte     // CIDs to look up (and take over)
}

// maxMoved bounds the moved-CID cache; past it, it starts over.
const maxMoved = 1 << 16

// linkMaxAge bounds how old a link datagram may be (its timestamp).
const linkMaxAge = 30 * time.Second

func newCluster(srv *Server) *cluster {
	return &cluster{srv: srv, store: srv.cfg.Cluster, id: byte(srv.cfg.ReplicaID), lease: srv.cfg.Lease,
		peers: map[byte]peer{}, moved: map[string]byte{}, inflight: map[string]bool{}, work: make(chan []byte, 256)}
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
		c.refresh()
		if c.fenced.CompareAndSwap(true, false) {
			srv.log.Warn("replica lease renewed: restoring the sessions it still owns")
			rctx, rcancel := context.WithTimeout(context.Background(), restoreTimeout)
			srv.restore(rctx)
			rcancel()
		}
		return
	}
	if errors.Is(err, statestore.ErrReplicaInUse) {
		srv.sampled.Error("another live process holds this replica id: serving no persisted session until its lease ends",
			zap.Int("replica", int(c.id)))
	} else {
		srv.sampled.Error("cannot renew the replica lease", zap.Error(err))
	}
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

// refresh re-reads the replicas' addresses and leases: a restarted replica
// comes back at a new address (a new pod), and relays must follow soon.
func (c *cluster) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), peerRefresh)
	defer cancel()
	reps, err := c.store.Replicas(ctx)
	if err != nil {
		return
	}
	peers := make(map[byte]peer, len(reps))
	for _, r := range reps {
		ap, _ := netip.ParseAddrPort(r.Address)
		peers[byte(r.ID)] = peer{addr: ap, alive: r.Alive}
	}
	c.mu.Lock()
	c.peers = peers
	c.mu.Unlock()
}

// peerRefresh is how often the replicas' addresses and leases are re-read.
const peerRefresh = 2 * time.Second

// run renews the lease every third of it, re-reads the peers every
// peerRefresh, and looks sessions up (relaying or taking them over) as
// the listeners ask, until stop.
func (c *cluster) run(stop <-chan struct{}) {
	t := time.NewTicker(c.lease / 3)
	defer t.Stop()
	r := time.NewTicker(min(peerRefresh, c.lease/3))
	defer r.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			c.beat()
		case <-r.C:
			c.refresh()
		case cid := <-c.work:
			c.resolve(cid)
		}
	}
}

// join renews the lease at start, waiting while another process still
// holds this replica id (a crashed predecessor whose lease has not run out
// yet): restored sessions must not be served by two processes. It gives up
// when ctx ends.
func (c *cluster) join(ctx context.Context) {
	for {
		c.beat()
		if c.mayServe() || ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Second, c.lease/3)):
		}
	}
}

// forward handles a record whose Connection ID names another replica: it is
// relayed to the owner while the owner's lease runs, or the session is
// taken over (asynchronously: this datagram is dropped, the device's
// retransmission finds the session).
func (c *cluster) forward(l *listener, p []byte, from netip.AddrPort, cid []byte) {
	c.mu.RLock()
	owner := cid[0]
	if o, ok := c.moved[string(cid)]; ok {
		owner = o
	}
	pr, ok := c.peers[owner]
	c.mu.RUnlock()
	if owner != c.id && ok && pr.alive && pr.addr.IsValid() {
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

// resolve finds where cid's session lives now: with its owner alive, the
// next records are relayed there (a session taken over keeps the CIDs that
// name its first owner); with the owner dead, it is taken over here.
func (c *cluster) resolve(cid []byte) {
	defer func() {
		c.mu.Lock()
		delete(c.inflight, string(cid))
		c.mu.Unlock()
	}()
	srv := c.srv
	if r := srv.table.byCID(cid); r.s != nil {
		return // here meanwhile
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.lease)
	defer cancel()
	owner, alive, err := c.store.Owner(ctx, cid)
	if err != nil {
		return // no such session (it ended), or the store is down
	}
	if alive && byte(owner) != c.id {
		c.mu.Lock()
		if len(c.moved) >= maxMoved {
			c.moved = map[string]byte{}
		}
		c.moved[string(cid)] = byte(owner)
		c.mu.Unlock()
		return
	}
	if byte(owner) == c.id {
		return // ours in the store but not here: a snapshot not restored (logged then)
	}
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
	c.mu.Lock()
	for _, id := range snap.CIDs {
		delete(c.moved, string(id))
	}
	c.mu.Unlock()
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
