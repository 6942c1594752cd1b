package record

import (
	"bytes"
	"context"
	"crypto"
	"encoding/gob"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// The harness: a pion client handshakes with a pion server over a
// packetPipe, the server is exported into a Conn, and the test (or a pump
// goroutine) plays the server from there on.

const wait = 10 * time.Second // upper bound on any awaited event; never a pass condition

var testPSK = bytes.Repeat([]byte{0x42}, 32)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// cidMode says who issues Connection IDs.
type cidMode int

const (
	cidNone   cidMode = iota // neither side
	cidServer                // the gateway issues one; the client only sends it (1.2: the usual device)
	cidBoth                  // both sides issue one
	cidClient                // only the client issues one: we put it in our records
	cidModesEnd
)

func (m cidMode) String() string {
	return [...]string{"nocid", "cid-server", "cid-both", "cid-client"}[m]
}

type setup struct {
	version protocol.Version
	suite   ciphersuite.ID
	cid     cidMode
	// dropLast drops the server's last handshake flight (1.2: CCS+Finished;
	// 1.3: the ACK of the client's Finished) for as long as pion serves.
	dropLast bool
	// clientFlight is the client's retransmission interval (pion default 1 s).
	clientFlight time.Duration
}

func (s setup) String() string {
	v := "1.2"
	if s.version == protocol.Version1_3 {
		v = "1.3"
	}
	return fmt.Sprintf("%s/%s/%s", v, s.suite, s.cid)
}

// session is a pion client talking to our Conn over a pipe.
type session struct {
	t      testing.TB
	pipe   *packetPipe
	client *dtls.Conn
	conn   *Conn
	params Params
	raw    []byte // the last datagram openApp opened, before Open changed it

	mu       sync.Mutex // guards conn against the pump when a test swaps it
	stopPump func()     // stops the pump (and waits), once; nil without one
}

// setConn swaps the Conn under the pump's feet.
func (ss *session) setConn(c *Conn) {
	ss.mu.Lock()
	ss.conn = c
	ss.mu.Unlock()
}

func (ss *session) getConn() *Conn {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.conn
}

const serverCIDLen = 6

func (s setup) options(server bool) []dtls.Option {
	opts := []dtls.Option{
		dtls.WithCipherSuites(s.suite),
		dtls.WithMinVersion(s.version), dtls.WithMaxVersion(s.version),
		dtls.WithEllipticCurves(elliptic.X25519),
	}
	gen := func(n int) func() []byte { return dtls.RandomCIDGenerator(n) }
	switch {
	case s.cid == cidBoth, server && s.cid == cidServer, !server && s.cid == cidClient:
		n := serverCIDLen
		if !server {
			n = 5
		}
		opts = append(opts, dtls.WithConnectionID(gen(n), dtls.CIDPathMigrationUnsafe))
	case s.cid != cidNone:
		opts = append(opts, dtls.WithConnectionID(dtls.OnlySendCIDGenerator(), dtls.CIDPathMigrationUnsafe))
	}
	if !server && s.clientFlight > 0 {
		opts = append(opts, dtls.WithFlightInterval(s.clientFlight))
	}
	return opts
}

// pskHash is the DTLS 1.3 PSK hash, which must be the suite's.
func (s setup) pskHash() crypto.Hash {
	if s.suite == ciphersuite.TLS_AES_256_GCM_SHA384 {
		return crypto.SHA384
	}
	return crypto.SHA256
}

func (s setup) clientPSK() dtls.Option {
	return dtls.WithPSK(func() ([]dtls.PSK, error) {
		return []dtls.PSK{{Identity: []byte("device-1"), Key: testPSK, Hash: s.pskHash()}}, nil
	}, nil)
}

// handshake runs a pion handshake and exports the server into params (New
// not called yet). The client's handshake may still be running when
// s.dropLast holds; its error arrives on clientDone.
func (s setup) handshake(t testing.TB) (*session, <-chan error) {
	t.Helper()
	p := newPacketPipe()
	t.Cleanup(p.close)
	if s.dropLast {
		p.setDrop(func(fromServer bool, d []byte) bool {
			return fromServer && isLastFlight(s.version, d)
		})
	}
	var kl lockedBuf
	sopts := []dtls.ServerOption{dtls.WithPSK(nil, func(ids [][]byte) (*dtls.PSK, error) {
		return &dtls.PSK{Identity: ids[0], Key: testPSK, Hash: s.pskHash()}, nil
	}), dtls.WithKeyLogWriter(&kl)}
	for _, o := range s.options(true) {
		sopts = append(sopts, o)
	}
	copts := []dtls.ClientOption{s.clientPSK()}
	for _, o := range s.options(false) {
		copts = append(copts, o)
	}
	sconn := detach(p.server)
	srv, err := dtls.Server(sconn, p.server.raddr, sopts...)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := dtls.Client(detach(p.client), p.client.raddr, copts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	clientDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
		defer cancel()
		clientDone <- cli.HandshakeContext(ctx)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	if err := srv.HandshakeContext(ctx); err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if !s.dropLast {
		if err := <-clientDone; err != nil {
			t.Fatalf("client handshake: %v", err)
		}
	}
	st, err := srv.ExportState()
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	sconn.waitUnread(t)
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	cidLen := 0
	if s.cid == cidBoth || s.cid == cidServer {
		cidLen = serverCIDLen
	}
	params := Params{State: b, KeyLog: kl.Bytes(), CIDLength: cidLen, Now: time.Now()}
	if s.version == protocol.Version1_2 {
		params.FinalFlight = finalFlight(p.serverSent())
	}
	p.setDrop(nil)
	return &session{t: t, pipe: p, client: cli, params: params}, clientDone
}

// isLastFlight reports whether a server datagram is its last handshake
// flight: 1.2 CCS+Finished; 1.3 the ACK (a lone epoch-3 record after the
// handshake: the only 1.3 server datagram starting with epoch bits 3).
func isLastFlight(v protocol.Version, d []byte) bool {
	if v == protocol.Version1_2 {
		return IsFinalFlight(d)
	}
	return len(d) > 0 && d[0]&unifiedMask == unifiedFixed && d[0]&3 == 3
}

// finalFlight picks the server's last transmission of its final flight from
// its write log, the way the gateway's virtual PacketConn does.
func finalFlight(sent [][]byte) [][]byte {
	start := -1
	for i, d := range sent {
		if IsFinalFlight(d) {
			start = i
		}
	}
	if start < 0 {
		return nil
	}
	return sent[start:]
}

// newSession runs the handshake and builds our Conn.
func newSession(t *testing.T, s setup) *session {
	t.Helper()
	ss, _ := s.handshake(t)
	c, err := New(ss.params)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ss.conn = c
	return ss
}

// fromClient returns the next datagram the client sent.
func (ss *session) fromClient() []byte {
	ss.t.Helper()
	d := ss.pipe.server.next(wait)
	if d == nil {
		ss.t.Fatal("no datagram from the client")
	}
	return d
}

// toClient delivers a datagram to the client.
func (ss *session) toClient(d []byte) { ss.pipe.deliver(true, d) }

// clientRead reads one application payload at the client.
func (ss *session) clientRead() []byte {
	ss.t.Helper()
	buf := make([]byte, 1<<15)
	_ = ss.client.SetReadDeadline(time.Now().Add(wait))
	n, err := ss.client.Read(buf)
	if err != nil {
		ss.t.Fatalf("client read: %v", err)
	}
	return buf[:n]
}

// openApp reads client datagrams into Open until one yields application
// data, answering replies, and returns the payloads of that datagram.
func (ss *session) openApp() [][]byte {
	ss.t.Helper()
	var d Datagram
	for {
		b := ss.fromClient()
		ss.raw = bytes.Clone(b)
		err := ss.conn.Open(&d, b, time.Now())
		for _, r := range d.Replies {
			ss.toClient(r)
		}
		if err != nil && !errors.Is(err, ErrEpoch) {
			ss.t.Fatalf("open: %v", err)
		}
		if len(d.Payloads) > 0 {
			out := make([][]byte, len(d.Payloads))
			for i, p := range d.Payloads {
				out[i] = bytes.Clone(p)
			}
			return out
		}
	}
}

// exportClient exports the pion client and decodes it into the mirror.
func (ss *session) exportClient() *pionState {
	ss.t.Helper()
	st, err := ss.client.ExportState()
	if err != nil {
		ss.t.Fatal(err)
	}
	b, err := st.MarshalBinary()
	if err != nil {
		ss.t.Fatal(err)
	}
	m, err := decodePionState(b)
	if err != nil {
		ss.t.Fatal(err)
	}
	return m
}

// resumeClient resumes a (modified) client state over the same pipe.
func (ss *session) resumeClient(s setup, m *pionState) {
	ss.t.Helper()
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(m); err != nil {
		ss.t.Fatal(err)
	}
	var st dtls.State
	if err := st.UnmarshalBinary(buf.Bytes()); err != nil {
		ss.t.Fatalf("client state: %v", err)
	}
	opts := append(s.options(false), s.clientPSK())
	cli, err := dtls.Resume(&st, detach(ss.pipe.client), ss.pipe.client.raddr, opts...)
	if err != nil {
		ss.t.Fatalf("resume client: %v", err)
	}
	ss.t.Cleanup(func() { _ = cli.Close() })
	ss.client = cli
}

// reseal replaces our Conn by one built from a modified server state.
func (ss *session) reseal(m *pionState) {
	ss.t.Helper()
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(m); err != nil {
		ss.t.Fatal(err)
	}
	p := ss.params
	p.State = buf.Bytes()
	c, err := New(p)
	if err != nil {
		ss.t.Fatalf("New: %v", err)
	}
	ss.conn = c
}

// allSetups is the differential matrix: every suite, both versions, every
// CID arrangement.
func allSetups() []setup {
	var out []setup
	for _, id := range []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, ciphersuite.TLS_PSK_WITH_AES_128_CCM,
		ciphersuite.TLS_PSK_WITH_AES_128_GCM_SHA256, ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256} {
		for m := cidNone; m < cidModesEnd; m++ {
			out = append(out, setup{version: protocol.Version1_2, suite: id, cid: m})
		}
	}
	for _, id := range []ciphersuite.ID{ciphersuite.TLS_AES_128_GCM_SHA256, ciphersuite.TLS_AES_256_GCM_SHA384,
		ciphersuite.TLS_CHACHA20_POLY1305_SHA256} {
		for m := cidNone; m < cidModesEnd; m++ {
			out = append(out, setup{version: protocol.Version1_3, suite: id, cid: m})
		}
	}
	return out
}
