package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"os"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/internal/pgtest"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
	"github.com/lwm2m-gateway/gateway/statestore/postgres"
	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func newBalancer(t *testing.T, target *net.UDPAddr) *devsim.Balancer {
	t.Helper()
	b, err := devsim.NewBalancer(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// roundTripRetry is roundTrip with the device retransmitting, as CoAP does,
// until the answer comes or the budget runs out.
func roundTripRetry(t *testing.T, conn *dtls.Conn, payload []byte, budget time.Duration) {
	t.Helper()
	msg := coapNON(payload)
	want := append([]byte("echo:"), msg...)
	deadline := time.Now().Add(budget)
	buf := make([]byte, 70000)
	for time.Now().Before(deadline) {
		if _, err := conn.Write(msg); err != nil {
			t.Fatalf("write: %v", err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				break
			}
			if bytes.Equal(buf[:n], want) {
				return
			}
		}
	}
	t.Fatalf("no answer to %q within %s", payload, budget)
}

// TestReplicasRelayAndTakeOver (issue 11.4): two replicas share one
// PostgreSQL store behind a UDP load balancer. Sessions are established on
// replica A; when the balancer sends the devices to B while A lives, B
// relays their records to A and A answers through B; when A dies, B takes
// A's sessions over once A's lease ran out. The devices never handshake
// again, DTLS 1.3 and 1.2.
func TestReplicasRelayAndTakeOver(t *testing.T) {
	_, dsn := pgtest.Schema(t)
	backend := newEchoBackend(t)
	k13, k12 := testKey("rep-13", 1), testKey("rep-12", 2)
	k12.Legacy = true
	keys := newMapStore(k13, k12)
	m := make([]byte, sealed.KEKSize)
	_, _ = rand.Read(m)
	kek, err := sealed.NewKEK(m)
	if err != nil {
		t.Fatal(err)
	}
	snapSealer, _ := kek.For("gateway session snapshot v1")
	linkSealer, _ := kek.For("gateway replica link v1")
	replica := func(id int) *Server {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := postgres.Open(ctx, dsn, postgres.WithReplica(id))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		srv, _ := startServer(t, Config{Store: keys, Backends: map[string]string{"dm": backend.pc.LocalAddr().String()},
			Sessions: st, SnapshotSealer: snapSealer, Cluster: st, ReplicaID: id,
			LinkAddress: "127.0.0.1:0", LinkSealer: linkSealer, Lease: 2 * time.Second, CheckpointInterval: 200 * time.Millisecond})
		return srv
	}
	a, b := replica(1), replica(2)
	addrOf := func(s *Server) *net.UDPAddr { return s.Addrs()[0].(*net.UDPAddr) }
	lb := newBalancer(t, addrOf(a))
	devs := []*dtls.Conn{
		(client{id: k13.Identity, key: k13.Secret, version: protocol.Version1_3}).mustDial(t, lb.Addr()),
		(client{id: k12.Identity, key: k12.Secret, version: protocol.Version1_2,
			suites: []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM_8}}).mustDial(t, lb.Addr()),
	}
	waitFor(t, func() bool { return a.Stats().Established == 2 }, "sessions on A")
	for _, d := range devs {
		roundTrip(t, d, []byte("on A"))
	}

	// The balancer rehashes the devices to B while A lives: relayed.
	lb.Retarget(addrOf(b))
	for _, d := range devs {
		roundTripRetry(t, d, []byte("through B to A"), 10*time.Second)
	}
	if b.Stats().Relayed == 0 || b.Stats().Established != 0 {
		t.Fatalf("B relayed %d datagrams and holds %d sessions; want relaying only", b.Stats().Relayed, b.Stats().Established)
	}

	// A dies after a checkpoint; once its lease has run out B takes its
	// sessions over.
	waitFor(t, func() bool { return a.Stats().SnapshotsWritten >= 2 }, "A's snapshots")
	a.crash()
	for _, d := range devs {
		roundTripRetry(t, d, []byte("taken over by B"), 20*time.Second)
	}
	st := b.Stats()
	if st.Takeovers != 2 || st.Established != 2 {
		t.Fatalf("B took over %d sessions and holds %d; refused %v", st.Takeovers, st.Established, st.RestoreRefused)
	}
	if st.HandshakesOK != 0 {
		t.Fatalf("B ran %d handshakes; the devices should not handshake again", st.HandshakesOK)
	}

	// A comes back (same replica id, a new process) and the balancer sends
	// the devices to it: their CIDs still name A, but B owns the sessions
	// now, so A relays to B.
	a2 := replica(1)
	lb.Retarget(addrOf(a2))
	for _, d := range devs {
		roundTripRetry(t, d, []byte("to A, owned by B"), 20*time.Second)
	}
	if a2.Stats().Relayed == 0 || a2.Stats().HandshakesOK != 0 || a2.Stats().Established != 0 {
		t.Fatalf("the restarted A relayed %d, handshook %d, holds %d; want relaying to B only",
			a2.Stats().Relayed, a2.Stats().HandshakesOK, a2.Stats().Established)
	}
}
