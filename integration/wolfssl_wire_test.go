package integration

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// sendingCID is how the client prints the CID it puts in its records.
var sendingCID = regexp.MustCompile(`Sending CID is ([0-9a-f]+)`)

// checkWire13 checks the DTLS 1.3 records the relay saw. With CIDs, every
// record of the application epochs (3, and 4 after a KeyUpdate) carries the
// CID the other side issued: the gateway's (as the client printed it) from the
// client, the client's own (wolfOwnCID) from the gateway; without them no
// record carries one. After a rebinding the gateway answered at the new
// port; after a KeyUpdate the client wrote in epoch 4.
func checkWire13(t *testing.T, relay *wireRelay, stdout string, cid, rebind, keyUpdate bool) {
	t.Helper()
	fromClient, toClient, errs := relay.wire()
	if len(errs) > 0 {
		t.Fatalf("relay: %v", errs)
	}
	var gatewayCID, clientCID []byte
	if cid {
		m := sendingCID.FindStringSubmatch(stdout)
		if !strings.Contains(stdout, "CID extension was negotiated") || m == nil {
			t.Fatalf("client negotiated no CID: %q", stdout)
		}
		// The client prints each byte with %x (no leading zero): take the
		// CID from its first record that carries one, and check that it
		// prints so.
		gatewayCID = firstCID(fromClient, gatewayCIDLength)
		var printed strings.Builder
		for _, b := range gatewayCID {
			fmt.Fprintf(&printed, "%x", b)
		}
		if gatewayCID == nil || printed.String() != m[1] {
			t.Fatalf("client records carry CID %x, the client says it sends %s", gatewayCID, m[1])
		}
		clientCID = []byte(wolfOwnCID)
	} else if strings.Contains(stdout, "CID") {
		t.Fatalf("client without --cid mentions a CID: %q", stdout)
	}
	epoch4 := false
	check := func(dir string, d []byte, want []byte) int {
		recs, err := splitRecords(d, len(want))
		if err != nil {
			t.Fatalf("%s datagram %x: %v", dir, d, err)
		}
		n := 0
		for _, r := range recs {
			if !r.unified || r.epochBits == 2 {
				continue // epoch 0 (plaintext) and the handshake epoch
			}
			n++
			epoch4 = epoch4 || (dir == "client" && r.epochBits == 0)
			if r.hasCID != (want != nil) || !bytes.Equal(r.cid, want) {
				t.Fatalf("%s record in epoch …%d carries CID %x, want %x", dir, r.epochBits, r.cid, want)
			}
		}
		return n
	}
	fromClientApp, toClientApp, viaNew := 0, 0, 0
	for _, d := range fromClient {
		fromClientApp += check("client", d, gatewayCID)
	}
	for _, d := range toClient {
		toClientApp += check("gateway", d.data, clientCID)
		if d.via == 1 {
			viaNew++
		}
	}
	if fromClientApp == 0 || toClientApp == 0 {
		t.Fatalf("no application-epoch records on the wire: %d from the client, %d from the gateway", fromClientApp, toClientApp)
	}
	if rebind && viaNew == 0 {
		t.Fatal("the gateway never answered at the client's new port: the session did not follow its CID")
	}
	if keyUpdate && !epoch4 {
		t.Fatal("no record from the client in epoch 4: the KeyUpdate did not take effect")
	}
	t.Logf("wire: %d client / %d gateway application records, CIDs %x / %x, %d datagrams to the new port",
		fromClientApp, toClientApp, gatewayCID, clientCID, viaNew)
}

// gatewayCIDLength is the length of the CIDs the gateway issues in this
// test (dtls.connection_id_length): the length is not on the wire.
const gatewayCIDLength = 8

// firstCID is the CID of the first unified-header record with the C bit in
// datagrams, nil if none has one.
func firstCID(datagrams [][]byte, cidLen int) []byte {
	for _, d := range datagrams {
		recs, _ := splitRecords(d, cidLen)
		for _, r := range recs {
			if r.hasCID {
				return r.cid
			}
		}
	}
	return nil
}

// checkWire12 checks that DTLS 1.2 application data went both ways on the
// wire (content type 23 in the DTLSPlaintext header, epoch 1), and that the
// relay had no trouble.
func checkWire12(t *testing.T, relay *wireRelay) {
	t.Helper()
	fromClient, toClient, errs := relay.wire()
	if len(errs) > 0 {
		t.Fatalf("relay: %v", errs)
	}
	count := func(dir string, datagrams [][]byte) int {
		n := 0
		for _, d := range datagrams {
			recs, err := splitRecords(d, 0)
			if err != nil {
				t.Fatalf("%s datagram %x: %v", dir, d, err)
			}
			for _, r := range recs {
				if r.unified {
					t.Fatalf("%s: a DTLS 1.3 unified header in a DTLS 1.2 session: %x", dir, d)
				}
				if r.contentType == 23 {
					n++
				}
			}
		}
		return n
	}
	var gw [][]byte
	for _, d := range toClient {
		gw = append(gw, d.data)
	}
	if c, g := count("client", fromClient), count("gateway", gw); c == 0 || g == 0 {
		t.Fatalf("application data records: %d from the client, %d from the gateway", c, g)
	}
}
