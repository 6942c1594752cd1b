package gateway

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
	"github.com/lwm2m-gateway/gateway/statestore"
	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"github.com/pion/dtls/v4/pkg/crypto/keyschedule"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// crash stops srv the way SIGKILL stops a process: no close_notify, no
// snapshot written, sockets gone.
func (srv *Server) crash() {
	srv.handingOff.Store(true) // closing sessions must not delete their snapshots
	srv.closing.Store(true)
	srv.mu.Lock()
	srv.closeListenersLocked()
	if srv.cancel != nil {
		srv.cancel()
	}
	srv.mu.Unlock()
	srv.readers.Wait()
	for _, s := range srv.table.snapshot() {
		s.close("crash", false)
	}
	_ = srv.Close()
}

func testSealer(t *testing.T) Sealer {
	t.Helper()
	m := make([]byte, sealed.KEKSize)
	_, _ = rand.Read(m)
	k, err := sealed.NewKEK(m)
	if err != nil {
		t.Fatal(err)
	}
	s, err := k.For("gateway session snapshot v1")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tapConn is a client-side PacketConn that records every datagram the
// device receives.
type tapConn struct {
	net.PacketConn
	mu  sync.Mutex
	got [][]byte
}

func (c *tapConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(p)
	if err == nil {
		c.mu.Lock()
		c.got = append(c.got, bytes.Clone(p[:n]))
		c.mu.Unlock()
	}
	return n, a, err
}

func (c *tapConn) received() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.got...)
}

// keyLog collects a client's NSS key log.
type keyLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (k *keyLog) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.b.Write(p)
}

func (k *keyLog) secret(label string) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, line := range strings.Split(k.b.String(), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == label {
			b, _ := hex.DecodeString(f[2])
			return b
		}
	}
	return nil
}

// tappedDevice is a pion client over a tapConn, with a key log.
type tappedDevice struct {
	conn *dtls.Conn
	tap  *tapConn
	log  *keyLog
	v    protocol.Version
}

func dialTapped(t *testing.T, addr *net.UDPAddr, k client) *tappedDevice {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := &tappedDevice{tap: &tapConn{PacketConn: pc}, log: &keyLog{}, v: k.version}
	suites := k.suites
	if suites == nil {
		suites = []ciphersuite.ID{ciphersuite.TLS_AES_128_GCM_SHA256}
	}
	conn, err := dtls.Client(d.tap, addr, dtls.WithPSK(func() ([]dtls.PSK, error) {
		return []dtls.PSK{{Identity: k.id, Key: k.key}}, nil
	}, nil), dtls.WithCipherSuites(suites...), dtls.WithEllipticCurves(elliptic.X25519),
		dtls.WithMinVersion(k.version), dtls.WithMaxVersion(k.version), dtls.WithKeyLogWriter(d.log),
		dtls.WithConnectionID(dtls.RandomCIDGenerator(4), dtls.CIDPathMigrationUnsafe))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	d.conn = conn
	t.Cleanup(func() { _ = conn.Close(); _ = pc.Close() })
	return d
}

// recordNumbers returns the (epoch, sequence) of every protected record the
// device received from the gateway: DTLS 1.2 carries them in clear; DTLS
// 1.3 encrypts the sequence number, which the test unmasks with the
// server's application traffic secret from the device's key log (RFC 9147
// §4.2.3, AES-128-GCM suites: sn_key = HKDF-Expand-Label(secret, "sn", "",
// 16), mask = AES-ECB(sn_key, first 16 bytes of the ciphertext)).
func (d *tappedDevice) recordNumbers(t *testing.T) []uint64 {
	t.Helper()
	var out []uint64
	var snBlock func([]byte) []byte
	if d.v == protocol.Version1_3 {
		secret := d.log.secret("SERVER_TRAFFIC_SECRET_0")
		key, err := keyschedule.HkdfExpandLabel(sha256.New, secret, "sn", nil, 16)
		if err != nil {
			t.Fatal(err)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		snBlock = func(sample []byte) []byte {
			m := make([]byte, 16)
			block.Encrypt(m, sample[:16])
			return m
		}
	}
	for _, p := range d.tap.received() {
		switch {
		case d.v == protocol.Version1_2 && len(p) >= recordHeaderLen && p[0] != contentTypeHandshake && p[0] != contentTypeCCS:
			if epoch := binary.BigEndian.Uint16(p[3:5]); epoch == 1 {
				out = append(out, uint64(epoch)<<48|uint64(p[5])<<40|uint64(binary.BigEndian.Uint32(p[6:10]))<<8|uint64(p[10]))
			}
		case d.v == protocol.Version1_3 && len(p) > 0 && isUnifiedHeader(p[0]):
			h := p[0]
			off := 1
			if h&0x10 != 0 {
				off += 4 // the CID the device asked for (dialTapped)
			}
			seqLen := 1
			if h&0x08 != 0 {
				seqLen = 2
			}
			seqOff := off
			off += seqLen
			if h&0x04 != 0 {
				off += 2
			}
			if len(p) < off+16 {
				continue
			}
			mask := snBlock(p[off:])
			seq := uint64(p[seqOff] ^ mask[0])
			if seqLen == 2 {
				seq = seq<<8 | uint64(p[seqOff+1]^mask[1])
			}
			out = append(out, uint64(h&3)<<48|seq)
		}
	}
	return out
}

// TestHandoffAndCrashContinueWithoutHandshake (issue 11): a graceful
// Handoff and a crash both let the next process continue every session
// without a handshake: the devices' existing DTLS sessions go on, the
// backend sees the same device address (upstream port rebound), a backend
// request still reaches its device (L3). After a crash the new process
// starts from an older snapshot, and still no record number the devices
// received is ever used twice (no AEAD nonce reuse), DTLS 1.2 and 1.3.
// The next processes run two event loops where the first ran one.
func TestHandoffAndCrashContinueWithoutHandshake(t *testing.T) {
	backend := newEchoBackend(t)
	k13, k12 := testKey("dev-13", 1), testKey("dev-12", 2)
	k12.Legacy = true
	store := newMapStore(k13, k12)
	dir := t.TempDir()
	path := filepath.Join(dir, "sessions.snap")
	sealer := testSealer(t)
	// The first process runs one event loop, the next ones two (an
	// operator raising sessions.event_loops across the restart): restored
	// sessions are spread over the loops.
	start := func(t *testing.T, addr string, snapPath string, loops int) (*Server, *net.UDPAddr) {
		snaps, err := statestore.OpenSnapshots(snapPath)
		if err != nil {
			t.Fatal(err)
		}
		return startServer(t, Config{Store: store, Backends: map[string]string{"dm": backend.pc.LocalAddr().String()},
			Listeners: []Listener{{Address: addr}}, Sessions: snaps, SnapshotSealer: sealer, CheckpointInterval: time.Hour, EventLoops: loops})
	}
	a, addr := start(t, "127.0.0.1:0", path, 1)
	devs := []*tappedDevice{
		dialTapped(t, addr, client{id: k13.Identity, key: k13.Secret, version: protocol.Version1_3}),
		dialTapped(t, addr, client{id: k12.Identity, key: k12.Secret, version: protocol.Version1_2,
			suites: []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM_8}}),
	}
	waitFor(t, func() bool { return a.Stats().Established == 2 }, "two sessions")
	exchange := func(t *testing.T, n int) {
		t.Helper()
		for i := range n {
			for _, d := range devs {
				roundTrip(t, d.conn, []byte{byte(i), 'x'})
			}
		}
	}
	exchange(t, 3)
	upstreams := backend.sources()

	// A graceful handoff: the next process continues.
	if err := a.Handoff(context.Background()); err != nil {
		t.Fatal(err)
	}
	saved, err := statestore.OpenSnapshots(path)
	if err != nil {
		t.Fatal(err)
	}
	snaps, _ := saved.LoadSnapshots(context.Background())
	for _, s := range snaps {
		// Issue 11 target: at most 512 bytes per session, sealed.
		t.Logf("sealed snapshot of %q: %d bytes", s.Identity, len(s.Sealed))
		if len(s.Sealed) > 512 {
			t.Fatalf("sealed snapshot of %q is %d bytes, above 512", s.Identity, len(s.Sealed))
		}
	}
	b, _ := start(t, addr.String(), path, 2)
	waitFor(t, func() bool { return b.Stats().SnapshotsRestored+uint64(len(b.Stats().RestoreRefused)) >= 2 },
		"restore; refused %v", b.Stats().RestoreRefused)
	if st := b.Stats(); st.SnapshotsRestored != 2 || st.Established != 2 {
		t.Fatalf("restored %d, established %d; refused %v", st.SnapshotsRestored, st.Established, st.RestoreRefused)
	}
	exchange(t, 3)
	checkUpstreamsOnOwnLoop(t, b)
	if distinct := backend.distinctSources(); len(distinct) != 2 {
		t.Fatalf("the backend saw %d device addresses across the handoff, want the same 2: %v", len(distinct), distinct)
	}
	// A server-initiated request to the first device's upstream address
	// reaches that device (L3).
	if _, err := backend.pc.WriteToUDP([]byte("read /3/0"), upstreams[0]); err != nil {
		t.Fatal(err)
	}
	_ = devs[0].conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	if n, err := devs[0].conn.Read(buf); err != nil || string(buf[:n]) != "read /3/0" {
		t.Fatalf("backend request after the handoff: %q, %v", buf[:n], err)
	}

	// A crash: the new process restores an older snapshot than the state
	// the old one reached.
	if _, err := b.checkpoint(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "at-checkpoint.snap")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, data, 0o600); err != nil {
		t.Fatal(err)
	}
	exchange(t, 20) // record numbers advance past the checkpoint
	b.crash()
	c, _ := start(t, addr.String(), old, 2)
	waitFor(t, func() bool { return c.Stats().SnapshotsRestored+uint64(len(c.Stats().RestoreRefused)) >= 2 },
		"restore after the crash; refused %v", c.Stats().RestoreRefused)
	if st := c.Stats(); st.SnapshotsRestored != 2 {
		t.Fatalf("after the crash restored %d; refused %v", st.SnapshotsRestored, st.RestoreRefused)
	}
	exchange(t, 20)
	for _, s := range []*Server{a, b, c} {
		if n := s.Stats().HandshakesOK; s != a && n != 0 {
			t.Fatalf("a restored gateway ran %d handshakes", n)
		}
	}
	for _, d := range devs {
		seen := map[uint64]bool{}
		nums := d.recordNumbers(t)
		if len(nums) < 40 {
			t.Fatalf("%v: only %d records seen", d.v, len(nums))
		}
		for _, n := range nums {
			if seen[n] {
				t.Fatalf("%v: record number %#x received twice: nonce reuse", d.v, n)
			}
			seen[n] = true
		}
	}
}
