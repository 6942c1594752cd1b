package gateway

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/statestore"
	"github.com/pion/dtls/v4/pkg/protocol"
)

// TestBadSnapshotsRefused (issue 11, bad input): a snapshot file that is
// truncated, a sealed snapshot that was altered, one sealed under another
// KEK and one older than its session's idle limit are each refused with
// their reason and deleted; the gateway starts anyway and serves new
// handshakes. A key store that is down at restore time delays the restore
// instead, and so does a snapshot store that is down: the session comes
// back once the store answers, without a handshake.
func TestBadSnapshotsRefused(t *testing.T) {
	backend := newEchoBackend(t)
	k, other := testKey("dev-snap", 1), testKey("dev-new", 2)
	store := newMapStore(k, other)
	sealer := testSealer(t)
	dir := t.TempDir()
	start := func(t *testing.T, at, path string, mod func(*Config)) *Server {
		t.Helper()
		cfg := Config{Store: store, Backends: map[string]string{"dm": backend.pc.LocalAddr().String()},
			Listeners: []Listener{{Address: at}}, Sessions: mustOpenSnapshots(t, path), SnapshotSealer: sealer, CheckpointInterval: time.Hour}
		if mod != nil {
			mod(&cfg)
		}
		srv, _ := startServer(t, cfg)
		return srv
	}
	var addr *net.UDPAddr

	// One session, handed off: the snapshot every case starts from.
	goodPath := filepath.Join(dir, "good.snap")
	a, addr0 := startServer(t, Config{Store: store, Backends: map[string]string{"dm": backend.pc.LocalAddr().String()},
		Sessions: mustOpenSnapshots(t, goodPath), SnapshotSealer: sealer, CheckpointInterval: time.Hour})
	addr = addr0
	dev := dialTapped(t, addr, client{id: k.Identity, key: k.Secret, version: protocol.Version1_3})
	roundTrip(t, dev.conn, []byte("before"))
	if err := a.Handoff(context.Background()); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(goodPath)
	if err != nil {
		t.Fatal(err)
	}
	copyGood := func(t *testing.T, name string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, good, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// newDeviceWorks: nothing but the refused snapshot is lost.
	newDeviceWorks := func(t *testing.T, srv *Server) {
		t.Helper()
		d := client{id: other.Identity, key: other.Secret, version: protocol.Version1_3}.mustDial(t, addr)
		roundTrip(t, d, []byte("new device"))
		_ = d.Close()
	}
	refused := func(t *testing.T, srv *Server, path, reason string) {
		t.Helper()
		waitFor(t, func() bool { return srv.Stats().RestoreRefused[reason] >= 1 }, "refusal %q; refused %v", reason, srv.Stats().RestoreRefused)
		if n := srv.Stats().SnapshotsRestored; n != 0 {
			t.Fatalf("restored %d sessions from a bad snapshot", n)
		}
		// The refused snapshot is deleted (written after the restore loop):
		// the next start does not try it again.
		kept := func() int {
			left, err := statestore.OpenSnapshots(path)
			if err != nil {
				t.Fatal(err)
			}
			snaps, _ := left.LoadSnapshots(context.Background())
			return len(snaps)
		}
		waitFor(t, func() bool { return kept() == 0 }, "the refused snapshot deleted; %d kept", kept())
	}

	t.Run("truncated file", func(t *testing.T) {
		p := filepath.Join(dir, "truncated.snap")
		if err := os.WriteFile(p, good[:len(good)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := statestore.OpenSnapshots(p); !errors.Is(err, statestore.ErrCorrupt) {
			t.Fatalf("truncated snapshot file: %v, want ErrCorrupt", err)
		}
		// Moved aside, so the gateway starts empty and the file is kept
		// for a look.
		matches, _ := filepath.Glob(p + "*")
		if len(matches) != 1 || matches[0] == p {
			t.Fatalf("truncated file not moved aside: %v", matches)
		}
		srv := start(t, addr.String(), p, nil)
		newDeviceWorks(t, srv)
		if n := srv.Stats().SnapshotsRestored; n != 0 {
			t.Fatalf("restored %d", n)
		}
		_ = srv.Close()
	})

	t.Run("altered snapshot", func(t *testing.T) {
		p := copyGood(t, "altered.snap")
		f, err := statestore.OpenSnapshots(p)
		if err != nil {
			t.Fatal(err)
		}
		snaps, _ := f.LoadSnapshots(context.Background())
		if len(snaps) != 1 {
			t.Fatalf("%d snapshots in the good file", len(snaps))
		}
		snaps[0].Sealed[len(snaps[0].Sealed)/2] ^= 1
		if err := f.SaveSnapshots(context.Background(), snaps, nil); err != nil {
			t.Fatal(err)
		}
		srv := start(t, addr.String(), p, nil)
		refused(t, srv, p, "unseal")
		newDeviceWorks(t, srv)
		_ = srv.Close()
	})

	t.Run("another KEK", func(t *testing.T) {
		p := copyGood(t, "foreign.snap")
		srv := start(t, addr.String(), p, func(c *Config) { c.SnapshotSealer = testSealer(t) })
		refused(t, srv, p, "unseal")
		newDeviceWorks(t, srv)
		_ = srv.Close()
	})

	t.Run("stale", func(t *testing.T) {
		p := copyGood(t, "stale.snap")
		// The session's idle limit is shorter than the time since its
		// last datagram.
		time.Sleep(20 * time.Millisecond)
		srv := start(t, addr.String(), p, func(c *Config) {
			c.IdleTimeout, c.RegistrationGrace = 10*time.Millisecond, time.Millisecond
		})
		refused(t, srv, p, "stale")
		_ = srv.Close()
	})

	t.Run("snapshot store down at restore", func(t *testing.T) {
		p := copyGood(t, "snapdown.snap")
		down := &flakySessions{SessionStore: mustOpenSnapshots(t, p)}
		down.down.Store(true)
		srv := start(t, addr.String(), p, func(c *Config) {
			c.Sessions, c.CheckpointInterval = down, 200*time.Millisecond
		})
		waitFor(t, func() bool { return down.loads.Load() >= 2 }, "a second load attempt while the store is down")
		if n := srv.Stats().SnapshotsRestored; n != 0 {
			t.Fatalf("restored %d sessions from a store that is down", n)
		}
		newDeviceWorks(t, srv) // served meanwhile
		down.down.Store(false)
		waitFor(t, func() bool { return srv.Stats().SnapshotsRestored == 1 }, "restore once the store is back; refused %v", srv.Stats().RestoreRefused)
		// A session restored while the gateway serves seals nothing until
		// the checkpoint after it reserved record numbers: an answer in
		// between is dropped, and the device retransmits, as CoAP does.
		roundTripRetry(t, dev.conn, []byte("after the snapshot store came back"), 20*time.Second)
		if n := srv.Stats().HandshakesOK; n != 1 { // the new device's only
			t.Fatalf("%d handshakes: the device should continue its session", n)
		}
		// Hand the session on: the next case restores this newer snapshot
		// (an older one would seal record numbers this server used).
		if err := srv.Handoff(context.Background()); err != nil {
			t.Fatal(err)
		}
		latest, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		good = latest
	})

	t.Run("key store down at restore", func(t *testing.T) {
		p := copyGood(t, "storedown.snap")
		store.mu.Lock()
		store.err = errors.New("key store down")
		store.mu.Unlock()
		srv := start(t, addr.String(), p, func(c *Config) { c.CheckpointInterval = 200 * time.Millisecond })
		waitFor(t, func() bool { return srv.Stats().RestoreRefused["store_unavailable"] >= 1 }, "restore attempt while the store is down")
		if n := srv.Stats().SnapshotsRestored; n != 0 {
			t.Fatalf("restored %d sessions without asking the store", n)
		}
		store.mu.Lock()
		store.err = nil
		store.mu.Unlock()
		waitFor(t, func() bool { return srv.Stats().SnapshotsRestored == 1 }, "restore once the store is back; refused %v", srv.Stats().RestoreRefused)
		roundTripRetry(t, dev.conn, []byte("after the store came back"), 20*time.Second)
		if n := srv.Stats().HandshakesOK; n != 0 {
			t.Fatalf("%d handshakes: the device should continue its session", n)
		}
		_ = srv.Close()
	})
}

func mustOpenSnapshots(t *testing.T, path string) *statestore.SnapshotFile {
	t.Helper()
	f, err := statestore.OpenSnapshots(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// flakySessions is a snapshot store that fails while down, as a database
// that cannot be reached does.
type flakySessions struct {
	SessionStore
	down  atomic.Bool
	loads atomic.Int32
}

func (f *flakySessions) LoadSnapshots(ctx context.Context) ([]statestore.Snapshot, error) {
	f.loads.Add(1)
	if f.down.Load() {
		return nil, errors.New("snapshot store down")
	}
	return f.SessionStore.LoadSnapshots(ctx)
}

func (f *flakySessions) SaveSnapshots(ctx context.Context, put []statestore.Snapshot, del [][]byte) error {
	if f.down.Load() {
		return errors.New("snapshot store down")
	}
	return f.SessionStore.SaveSnapshots(ctx, put, del)
}
