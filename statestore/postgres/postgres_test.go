package postgres

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/pgtest"
	"github.com/lwm2m-gateway/gateway/statestore"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func open(t *testing.T, dsn string, replica int) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn, WithReplica(replica))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestRegistrations(t *testing.T) {
	_, dsn := pgtest.Schema(t)
	s := open(t, dsn, 0)
	a := statestore.Registration{Identity: []byte{0, 1, 2}, Endpoint: "urn:a", Location: "/rd/1", Lifetime: time.Hour, Updated: time.Now().UTC().Truncate(time.Microsecond)}
	b := statestore.Registration{Identity: []byte("b"), Endpoint: "urn:b", Location: "/rd/2", Lifetime: time.Minute, Updated: a.Updated}
	if err := s.SaveRegistrations(ctx(t), []statestore.Registration{a, b}, nil); err != nil {
		t.Fatal(err)
	}
	a.Location = "/rd/9"
	if err := s.SaveRegistrations(ctx(t), []statestore.Registration{a}, [][]byte{b.Identity}); err != nil {
		t.Fatal(err)
	}
	got, err := open(t, dsn, 1).LoadRegistrations(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !bytes.Equal(got[0].Identity, a.Identity) || got[0].Location != "/rd/9" ||
		got[0].Lifetime != time.Hour || !got[0].Updated.Equal(a.Updated) {
		t.Fatalf("registrations %+v", got)
	}
}

func snap(id, cid string) statestore.Snapshot {
	return statestore.Snapshot{ID: []byte(id), Identity: []byte("ident-" + id), Sealed: []byte("sealed-" + id),
		Saved: time.Now().UTC().Truncate(time.Microsecond), CIDs: [][]byte{[]byte(cid)}}
}

// TestTakeOverOwnershipAndLeases (issue 11.4): a replica loads only its own
// sessions; a session is taken over only once its owner's lease ran out,
// by exactly one of the replicas that try at once; the old owner's save of
// it is refused (NotOwnedError) and the rest of its save goes through; a
// replica id's lease is held by one process, released at a handoff.
func TestTakeOverOwnershipAndLeases(t *testing.T) {
	_, dsn := pgtest.Schema(t)
	a, b, c := open(t, dsn, 1), open(t, dsn, 2), open(t, dsn, 3)
	if _, err := a.Heartbeat(ctx(t), "127.0.0.1:1", time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.SaveSnapshots(ctx(t), []statestore.Snapshot{snap("s1", "cid-1"), snap("s2", "cid-2")}, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.LoadSnapshots(ctx(t)); len(got) != 0 {
		t.Fatalf("replica 2 loads replica 1's sessions: %d", len(got))
	}
	if got, _ := a.LoadSnapshots(ctx(t)); len(got) != 2 || len(got[0].CIDs) != 1 {
		t.Fatalf("replica 1 loads %+v", got)
	}
	if owner, alive, err := b.Owner(ctx(t), []byte("cid-1")); err != nil || owner != 1 || !alive {
		t.Fatalf("owner of cid-1: %d %v %v", owner, alive, err)
	}
	if _, err := b.TakeOver(ctx(t), []byte("cid-1")); !errors.Is(err, statestore.ErrNotTaken) {
		t.Fatalf("takeover while the owner's lease runs: %v", err)
	}
	// The same replica id from another process while the lease runs.
	a2 := open(t, dsn, 1)
	if _, err := a2.Heartbeat(ctx(t), "127.0.0.1:9", time.Second); !errors.Is(err, statestore.ErrReplicaInUse) {
		t.Fatalf("a second process took replica 1's live lease: %v", err)
	}

	// The lease runs out; two replicas try at once, one wins.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, alive, _ := b.Owner(ctx(t), []byte("cid-1")); !alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lease never ran out")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, s := range []*Store{b, c} { // both alive
		if _, err := s.Heartbeat(ctx(t), "127.0.0.1:2", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	wins := make([]*Store, 0, 2)
	var mu sync.Mutex
	for _, s := range []*Store{b, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.TakeOver(ctx(t), []byte("cid-1"))
			if err == nil {
				if !bytes.Equal(got.Sealed, []byte("sealed-s1")) || len(got.CIDs) != 1 {
					t.Errorf("taken over %+v", got)
				}
				mu.Lock()
				wins = append(wins, s)
				mu.Unlock()
			} else if !errors.Is(err, statestore.ErrNotTaken) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if len(wins) != 1 {
		t.Fatalf("%d replicas took the session over, want exactly 1", len(wins))
	}
	winner := wins[0]
	if owner, _, _ := a.Owner(ctx(t), []byte("cid-1")); owner != winner.Replica() {
		t.Fatalf("owner %d after the takeover, want %d", owner, winner.Replica())
	}
	// The old owner's next save: s1 is not its own any more, s2 is.
	err := a.SaveSnapshots(ctx(t), []statestore.Snapshot{snap("s1", "cid-1"), snap("s2", "cid-2")}, nil)
	var noe *statestore.NotOwnedError
	if !errors.As(err, &noe) || len(noe.IDs) != 1 || string(noe.IDs[0]) != "s1" {
		t.Fatalf("save after the takeover: %v", err)
	}
	if got, _ := winner.LoadSnapshots(ctx(t)); len(got) != 1 || string(got[0].ID) != "s1" {
		t.Fatalf("the winner loads %+v", got)
	}

	// A handoff releases the lease: the next process renews it at once.
	a3 := open(t, dsn, 4)
	if _, err := a3.Heartbeat(ctx(t), "127.0.0.1:4", time.Hour); err != nil {
		t.Fatal(err)
	}
	a4 := open(t, dsn, 4)
	if _, err := a4.Heartbeat(ctx(t), "127.0.0.1:5", time.Hour); !errors.Is(err, statestore.ErrReplicaInUse) {
		t.Fatalf("before the release: %v", err)
	}
	if err := a3.Release(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := a4.Heartbeat(ctx(t), "127.0.0.1:5", time.Hour); err != nil {
		t.Fatalf("after the release: %v", err)
	}
	reps, err := a4.Replicas(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if r.ID == 4 && (r.Address != "127.0.0.1:5" || !r.Alive) {
			t.Fatalf("replica 4 after the new process's heartbeat: %+v", r)
		}
	}
}
