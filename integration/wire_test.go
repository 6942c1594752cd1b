package integration

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
)

// wireRelay sits between a DTLS client and the gateway on loopback and
// keeps every datagram, so a test can check on the wire what a peer it did
// not write (wolfSSL) sends: Connection IDs, epochs. With rebind it plays a
// NAT that gives the client a new source port once the handshake is over:
// the client's first DTLS 1.3 application-epoch record and all that follows
// leave from a second socket, so the gateway can only find the session by
// its CID.
type wireRelay struct {
	client *net.UDPConn    // where the client sends
	ups    [2]*net.UDPConn // towards the gateway: before and after the rebinding
	target *net.UDPAddr
	rebind bool

	mu         sync.Mutex
	peer       *net.UDPAddr // the client, once it has sent
	cur        int          // index in ups of the socket in use
	fromClient [][]byte
	toClient   []relayed
	errs       []error
}

// relayed is a datagram from the gateway and the upstream socket it reached.
type relayed struct {
	via  int
	data []byte
}

func newWireRelay(t *testing.T, target *net.UDPAddr, rebind bool) *wireRelay {
	t.Helper()
	r := &wireRelay{target: target, rebind: rebind}
	var err error
	if r.client, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	for i := range r.ups {
		if r.ups[i], err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); r.fromClientLoop() }()
	for i := range r.ups {
		go func() { defer wg.Done(); r.fromGatewayLoop(i) }()
	}
	t.Cleanup(func() {
		r.client.Close()
		r.ups[0].Close()
		r.ups[1].Close()
		wg.Wait()
	})
	return r
}

func (r *wireRelay) addr() *net.UDPAddr { return r.client.LocalAddr().(*net.UDPAddr) }

// upAddr is the address the gateway sees for the client before (0) and
// after (1) the rebinding.
func (r *wireRelay) upAddr(i int) string { return r.ups[i].LocalAddr().String() }

func (r *wireRelay) fromClientLoop() {
	buf := make([]byte, 65536)
	for {
		n, from, err := r.client.ReadFromUDP(buf)
		if err != nil {
			return
		}
		d := append([]byte(nil), buf[:n]...)
		r.mu.Lock()
		r.peer = from
		r.fromClient = append(r.fromClient, d)
		// A unified header (RFC 9147 §4: 001CSLEE) whose epoch bits are 3:
		// the first record of the application epoch.
		if r.rebind && r.cur == 0 && d[0]&0xe0 == 0x20 && d[0]&0x03 == 3 {
			r.cur = 1
		}
		up := r.ups[r.cur]
		r.mu.Unlock()
		if _, err := up.WriteToUDP(d, r.target); err != nil {
			r.fail(err)
		}
	}
}

func (r *wireRelay) fromGatewayLoop(i int) {
	buf := make([]byte, 65536)
	for {
		n, _, err := r.ups[i].ReadFromUDP(buf)
		if err != nil {
			return
		}
		d := append([]byte(nil), buf[:n]...)
		r.mu.Lock()
		r.toClient = append(r.toClient, relayed{via: i, data: d})
		peer := r.peer
		r.mu.Unlock()
		if _, err := r.client.WriteToUDP(d, peer); err != nil {
			r.fail(err)
		}
	}
}

func (r *wireRelay) fail(err error) {
	if errors.Is(err, net.ErrClosed) {
		return
	}
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

// wire returns copies of what went through so far.
func (r *wireRelay) wire() (fromClient [][]byte, toClient []relayed, errs []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.fromClient...), append([]relayed(nil), r.toClient...), append([]error(nil), r.errs...)
}

// record13 is what a test reads from one record's header: for a DTLS 1.3
// unified header (RFC 9147 §4) the low two bits of the epoch and the
// Connection ID, for a DTLSPlaintext header (epoch 0) its content type.
type record13 struct {
	unified     bool
	epochBits   byte   // unified: epoch & 3
	hasCID      bool   // unified: the C bit
	cid         []byte // unified: the CID when hasCID
	contentType byte   // plaintext header
}

// splitRecords reads the records of one datagram; cidLen is the length of
// the CIDs this direction carries (it is not on the wire).
func splitRecords(d []byte, cidLen int) ([]record13, error) {
	var out []record13
	for len(d) > 0 {
		if d[0]&0xe0 != 0x20 {
			// DTLSPlaintext: type, version, epoch, sequence_number, length.
			if len(d) < 13 {
				return out, fmt.Errorf("plaintext header of %d bytes", len(d))
			}
			n := 13 + (int(d[11])<<8 | int(d[12]))
			if len(d) < n {
				return out, fmt.Errorf("plaintext record of %d bytes, %d left", n, len(d))
			}
			out = append(out, record13{contentType: d[0]})
			d = d[n:]
			continue
		}
		rec := record13{unified: true, epochBits: d[0] & 0x03}
		hdr := 1
		if d[0]&0x10 != 0 {
			if len(d) < hdr+cidLen {
				return out, fmt.Errorf("CID cut short")
			}
			rec.hasCID, rec.cid = true, d[hdr:hdr+cidLen]
			hdr += cidLen
		}
		if d[0]&0x08 != 0 {
			hdr += 2
		} else {
			hdr++
		}
		n := len(d)
		if d[0]&0x04 != 0 {
			if len(d) < hdr+2 {
				return out, fmt.Errorf("length cut short")
			}
			n = hdr + 2 + (int(d[hdr])<<8 | int(d[hdr+1]))
			if len(d) < n {
				return out, fmt.Errorf("record of %d bytes, %d left", n, len(d))
			}
		}
		out = append(out, rec)
		d = d[n:]
	}
	return out, nil
}
