package gateway

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestR5ReroutingAttackRefused reproduces RFC 9257 §4.1: a PSK shared by a
// group is known to gateways A and B, each bound to its own server name. A
// client talks to B (SNI gw-b); an attacker reroutes its ClientHello to A.
// A must complete no handshake and forward nothing, while the same client
// reaches B.
func TestR5ReroutingAttackRefused(t *testing.T) {
	backendA, backendB := newEchoBackend(t), newEchoBackend(t)
	group := testKey("group-member-7", 1)
	group.Group = true
	group.ImportContext = []byte("client=member-7;servers=gw-a,gw-b")
	atA, atB := group.Clone(), group.Clone()
	atA.ServerName, atB.ServerName = "gw-a.example", "gw-b.example"
	srvA, addrA := startServer(t, Config{Store: newMapStore(atA), Backends: map[string]string{"dm": backendA.pc.LocalAddr().String()}})
	_, addrB := startServer(t, Config{Store: newMapStore(atB), Backends: map[string]string{"dm": backendB.pc.LocalAddr().String()}})

	meantForB := client{id: group.Identity, key: group.Secret, serverName: "gw-b.example"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := meantForB.dial(ctx, addrB)
	if err != nil {
		t.Fatalf("client cannot reach B: %v", err)
	}
	roundTrip(t, conn, []byte("to B"))
	conn.Close()

	// The attacker delivers the same client's handshake to A instead.
	relay := newRelay(t, addrA)
	rerouted, err := meantForB.dial(ctx, relay.pc.LocalAddr().(*net.UDPAddr))
	if err == nil {
		defer rerouted.Close()
		_ = rerouted.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = rerouted.Write(coapNON([]byte("must not reach A's backend")))
		if _, rerr := rerouted.Read(make([]byte, 100)); rerr == nil {
			t.Fatal("rerouted session carried data on A")
		}
	}
	waitFor(t, func() bool { return srvA.Stats().HandshakesFailed["policy_R5"] == 1 }, "R5 refusal on A")
	if st := srvA.Stats(); st.HandshakesOK != 0 || st.DatagramsToBackend != 0 {
		t.Fatalf("A completed %d handshakes, forwarded %d datagrams", st.HandshakesOK, st.DatagramsToBackend)
	}
	if n := len(backendA.sources()); n != 0 {
		t.Fatalf("A's backend received %d datagrams", n)
	}
}
