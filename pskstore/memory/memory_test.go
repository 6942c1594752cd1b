package memory

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/pskstoretest"
)

func TestConformance(t *testing.T) {
	pskstoretest.Run(t, func(t *testing.T, keys []pskstore.Key) pskstore.Store {
		s, err := New(keys...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestNewRefuses(t *testing.T) {
	a := pskstoretest.NewKey(t, []byte("device-a"))
	b := pskstoretest.NewKey(t, []byte("device-b"))
	tests := []struct {
		name string
		keys []pskstore.Key
		rule pskstore.Rule
	}{
		{"R1 short key", []pskstore.Key{{Identity: []byte("x"), Secret: a.Secret[:15]}}, "R1"},
		{"R2 password", []pskstore.Key{{Identity: []byte("x"), Secret: pskstore.Secret("passwordpassword")}}, "R2"},
		{"R4 same key under two identities", []pskstore.Key{a, {Identity: []byte("device-c"), Secret: a.Secret}}, "R4"},
		{"R4 group without importer context", []pskstore.Key{{Identity: []byte("g"), Secret: b.Secret, Group: true}}, "R4"},
		{"R7 duplicate identity", []pskstore.Key{a, {Identity: a.Identity, Secret: b.Secret}}, "R7"},
		{"R8 resumption prefix", []pskstore.Key{{Identity: []byte(pskstore.ResumptionPrefix + "1"), Secret: b.Secret}}, "R8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.keys...)
			var pe *pskstore.PolicyError
			if !errors.As(err, &pe) || pe.Rule != tt.rule {
				t.Fatalf("New error = %v, want policy %s", err, tt.rule)
			}
		})
	}
	t.Run("R7 should findings do not refuse", func(t *testing.T) {
		k := pskstoretest.NewKey(t, []byte{0xff, 0x00})
		if _, err := New(k); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPutRefusesR4SharedKey(t *testing.T) {
	a := pskstoretest.NewKey(t, []byte("device-a"))
	s, err := New(a)
	if err != nil {
		t.Fatal(err)
	}
	dup := pskstore.Key{Identity: []byte("device-b"), Secret: a.Secret}
	var pe *pskstore.PolicyError
	if err := s.Put(dup); !errors.As(err, &pe) || pe.Rule != "R4" {
		t.Fatalf("Put with the key of another identity: %v, want R4", err)
	}
	// Rotating a to the same key again is not a duplicate of itself.
	if err := s.Put(a); err != nil {
		t.Fatalf("Put of an unchanged key: %v", err)
	}
	// After a rotates away from its key, the old key material is free again.
	if err := s.Put(pskstoretest.NewKey(t, []byte("device-a"))); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(dup); err != nil {
		t.Fatalf("old key material not released on rotation: %v", err)
	}
	if err := s.Put(pskstore.Key{Identity: []byte("weak"), Secret: pskstore.Secret("0123456789abcdef")}); !errors.As(err, &pe) || pe.Rule != "R2" {
		t.Fatalf("Put of a weak key: %v, want R2", err)
	}
	if len(allKeys(t, s)) != 2 {
		t.Errorf("refused Puts changed the store: %d keys", len(allKeys(t, s)))
	}
}

// TestWatchR10 checks the events of Put and Delete: Added, Rotated, Revoked.
func TestWatchR10(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := pskstoretest.NewKey(t, []byte("device-a"))
	if err := s.Put(a); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(pskstoretest.NewKey(t, []byte("device-a"))); err != nil {
		t.Fatal(err)
	}
	if !s.Delete([]byte("device-a")) {
		t.Fatal("Delete of a present identity returned false")
	}
	if s.Delete([]byte("device-a")) {
		t.Fatal("Delete of an absent identity returned true")
	}
	if _, err := s.Lookup(ctx, []byte("device-a")); !errors.Is(err, pskstore.ErrUnknownIdentity) {
		t.Fatalf("Lookup after Delete: %v", err)
	}
	for _, want := range []pskstore.ChangeKind{pskstore.Added, pskstore.Rotated, pskstore.Revoked} {
		select {
		case c := <-ch:
			if c.Kind != want || string(c.Identity) != "device-a" {
				t.Fatalf("change = %v %q, want %v device-a", c.Kind, c.Identity, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %v change", want)
		}
	}
	// Nothing else was reported: the next change is a marker's.
	if err := s.Put(pskstoretest.NewKey(t, []byte("marker"))); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-ch:
		if c.Kind != pskstore.Added || string(c.Identity) != "marker" {
			t.Fatalf("unexpected change %v %q", c.Kind, c.Identity)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no change for the marker")
	}
}

func TestKeysSnapshot(t *testing.T) {
	b := pskstoretest.NewKey(t, []byte("b"))
	a := pskstoretest.NewKey(t, []byte("a"))
	s, err := New(b, a)
	if err != nil {
		t.Fatal(err)
	}
	keys := allKeys(t, s)
	if len(keys) != 2 || string(keys[0].Identity) != "a" || string(keys[1].Identity) != "b" {
		t.Fatalf("Keys() not sorted by identity")
	}
	keys[0].Secret[0] ^= 0xff
	got, _ := s.Lookup(context.Background(), []byte("a"))
	if !got.Equal(func() pskstore.Key { k := a.Clone(); k.Normalize(); return k }()) {
		t.Error("Keys() shares memory with the store")
	}
}

func allKeys(t *testing.T, s *Store) []pskstore.Key {
	t.Helper()
	keys, err := s.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return keys
}
