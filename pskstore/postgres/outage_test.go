package postgres

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// lookupWithin looks identity up and fails t unless the answer came within d.
func lookupWithin(t *testing.T, s *Store, identity []byte, d time.Duration) error {
	t.Helper()
	start := time.Now()
	_, err := s.Lookup(context.Background(), identity)
	if took := time.Since(start); took > d {
		t.Errorf("Lookup took %v, want at most %v (err %v)", took, d, err)
	}
	return err
}

// TestLookupDatabaseDown: with PostgreSQL refusing connections, or
// accepting and never answering, Lookup fails with ErrUnavailable within
// the lookup timeout; while it is down, concurrent lookups fail at once;
// when it is back, lookups work again without reopening the store.
func TestLookupDatabaseDown(t *testing.T) {
	const timeout = 300 * time.Millisecond
	d := newDB(t)
	p := newProxy(t, d)
	s := openDSN(t, d.dsnVia(p.addr, appName(t, "down")), WithLookupTimeout(timeout))
	keys := newKeys(t, "device", 2)
	if err := s.PutMany(ctxT(t), keys, nil); err != nil {
		t.Fatal(err)
	}
	id := keys[0].Identity
	if err := lookupWithin(t, s, id, timeout); err != nil {
		t.Fatal(err)
	}

	t.Run("refused", func(t *testing.T) {
		p.down()
		for range 3 {
			err := lookupWithin(t, s, id, timeout+100*time.Millisecond)
			if !errors.Is(err, pskstore.ErrUnavailable) {
				t.Fatalf("Lookup with the database down: %v, want ErrUnavailable", err)
			}
			if errors.Is(err, pskstore.ErrUnknownIdentity) {
				t.Fatalf("an outage reported as an unknown identity: %v", err)
			}
		}
		recovers(t, p, s, id)
	})

	t.Run("black hole", func(t *testing.T) {
		p.blackhole()
		start := time.Now()
		err := lookupWithin(t, s, id, timeout+100*time.Millisecond)
		if !errors.Is(err, pskstore.ErrUnavailable) {
			t.Fatalf("Lookup with the database not answering: %v, want ErrUnavailable", err)
		}
		if took := time.Since(start); took < timeout-50*time.Millisecond {
			t.Errorf("Lookup gave up after %v, before the %v timeout", took, timeout)
		}
		// The database is known down: one lookup probes it, the others
		// fail at once instead of each waiting for the timeout.
		var wg sync.WaitGroup
		errs := make([]error, 8)
		took := make([]time.Duration, len(errs))
		for i := range errs {
			wg.Go(func() {
				t0 := time.Now()
				_, errs[i] = s.Lookup(context.Background(), id)
				took[i] = time.Since(t0)
			})
		}
		wg.Wait()
		fast := 0
		for i, err := range errs {
			if !errors.Is(err, pskstore.ErrUnavailable) {
				t.Errorf("lookup %d: %v, want ErrUnavailable", i, err)
			}
			if took[i] > timeout+100*time.Millisecond {
				t.Errorf("lookup %d took %v, more than the %v timeout", i, took[i], timeout)
			}
			if took[i] < timeout/2 {
				fast++
			}
		}
		if fast < len(errs)-1 {
			t.Errorf("%d of %d lookups failed fast while the database was known down, want %d", fast, len(errs), len(errs)-1)
		}
		recovers(t, p, s, id)
	})
}

// recovers brings the proxy up and waits for lookups to work again.
func recovers(t *testing.T, p *proxy, s *Store, id []byte) {
	t.Helper()
	p.up()
	deadline := time.Now().Add(5 * time.Second)
	for {
		k, err := s.Lookup(context.Background(), id)
		if err == nil {
			if !bytes.Equal(k.Identity, id) {
				t.Fatalf("Lookup returned identity %q, want %q", k.Identity, id)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookups still fail after the database came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLookupRecoversAfterTerminate: every pooled connection is terminated
// by the server (pg_terminate_backend, as in a failover); the very next
// lookups succeed without reopening the store.
func TestLookupRecoversAfterTerminate(t *testing.T) {
	d := newDB(t)
	app := appName(t, "term")
	s := d.open(t, app)
	keys := newKeys(t, "device", 16)
	if err := s.PutMany(ctxT(t), keys, nil); err != nil {
		t.Fatal(err)
	}
	// Fill the pool with several connections.
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			if _, err := s.Lookup(context.Background(), keys[i].Identity); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for round := range 2 {
		if n := terminate(t, app); n == 0 {
			t.Fatal("no pooled connection to terminate")
		}
		for i := range keys {
			wg.Go(func() {
				k, err := s.Lookup(context.Background(), keys[i].Identity)
				if err != nil || !bytes.Equal(k.Secret, keys[i].Secret) {
					t.Errorf("round %d: Lookup after pg_terminate_backend: %v", round, err)
				}
			})
		}
		wg.Wait()
	}
	// Writes, which are not retried, check idle connections first.
	time.Sleep(pingAfter + 100*time.Millisecond)
	terminate(t, app)
	if err := s.Delete(ctxT(t), keys[0].Identity); err != nil {
		t.Fatalf("Delete after pg_terminate_backend: %v", err)
	}
}

// TestLookupRecoversWithOnePooledConn: connections broken by an outage do
// not hold their slot of the pool while pgx cleans them up (which waits up
// to 15s for a cancel request to an unreachable server), so even a pool of
// one connection serves lookups as soon as the database is back.
func TestLookupRecoversWithOnePooledConn(t *testing.T) {
	const timeout = 300 * time.Millisecond
	d := newDB(t)
	p := newProxy(t, d)
	s := openDSN(t, d.dsnVia(p.addr, appName(t, "one")), WithLookupTimeout(timeout), WithMaxConns(1))
	keys := newKeys(t, "device", 1)
	if err := s.PutMany(ctxT(t), keys, nil); err != nil {
		t.Fatal(err)
	}
	id := keys[0].Identity
	for range 3 {
		if err := lookupWithin(t, s, id, timeout); err != nil {
			t.Fatal(err)
		}
		p.blackhole()
		if err := lookupWithin(t, s, id, timeout+100*time.Millisecond); !errors.Is(err, pskstore.ErrUnavailable) {
			t.Fatalf("Lookup with the database not answering: %v, want ErrUnavailable", err)
		}
		start := time.Now()
		recovers(t, p, s, id)
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("lookups recovered %v after the database came back, want within 2s", took)
		}
	}
}
