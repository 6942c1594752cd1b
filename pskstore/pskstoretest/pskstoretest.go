// Package pskstoretest is the conformance suite every pskstore.Store backend
// runs from its own tests, the way pion runs nettest.TestConn: one set of
// expectations for lookups (R7 byte-exact identities, copies, context,
// concurrency) whatever the storage.
package pskstoretest

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// Open builds a store holding exactly keys; it fails t itself on error.
type Open func(t *testing.T, keys []pskstore.Key) pskstore.Store

// Run runs the conformance suite against stores built by open. Each subtest
// opens its own store. If a store also implements pskstore.Watcher, its
// channel must close when the watch context is done.
func Run(t *testing.T, open Open) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, open Open)
	}{
		{"LookupHitExactFields", testLookupHit},
		{"LookupReturnsCopy", testLookupCopy},
		{"StoreCopiesInput", testStoreCopiesInput},
		{"UnknownIdentity", testUnknown},
		{"R7ByteExactIdentities", testByteExact},
		{"R7BinaryIdentities", testBinary},
		{"ContextCanceled", testContext},
		{"ConcurrentLookups", testConcurrent},
		{"WatchClosesWithContext", testWatchCloses},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open) })
	}
}

// NewKey returns a valid key for identity with 32 fresh random bytes
// (pskstore.GenerateSecret) and default bindings.
func NewKey(t testing.TB, identity []byte) pskstore.Key {
	t.Helper()
	s, err := pskstore.GenerateSecret(0)
	if err != nil {
		t.Fatal(err)
	}
	return pskstore.Key{Identity: bytes.Clone(identity), Secret: s, Endpoint: "urn:dev:" + fmt.Sprintf("%x", identity)}
}

// fullKey sets every field to a non-default value.
func fullKey(t testing.TB) pskstore.Key {
	k := NewKey(t, []byte("device-full"))
	k.Hash = crypto.SHA384
	k.Endpoint = "urn:imei:490154203237518"
	k.ServerName = "dm.gw.example.com"
	k.Backend = "dm"
	k.Versions = pskstore.DTLS13
	k.Modes = pskstore.ModeDHE | pskstore.ModeKE
	k.Legacy = false
	k.Group = true
	k.ImportContext = []byte("client=device-full;server=dm.gw.example.com")
	return k
}

func lookup(t *testing.T, s pskstore.Store, identity []byte) (pskstore.Key, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Lookup(ctx, identity)
}

// mustEqual compares a looked-up key with the key given to open, field by
// field, naming the field and never printing key bytes.
func mustEqual(t *testing.T, got, want pskstore.Key) {
	t.Helper()
	want = want.Clone()
	want.Normalize()
	if !bytes.Equal(got.Identity, want.Identity) {
		t.Errorf("Identity = %q, want %q", got.Identity, want.Identity)
	}
	if !bytes.Equal(got.Secret, want.Secret) {
		t.Errorf("Secret differs (%v, want %v)", got.Secret, want.Secret)
	}
	if !bytes.Equal(got.ImportContext, want.ImportContext) {
		t.Errorf("ImportContext = %q, want %q", got.ImportContext, want.ImportContext)
	}
	g, w := got, want
	g.Identity, g.Secret, g.ImportContext = nil, nil, nil
	w.Identity, w.Secret, w.ImportContext = nil, nil, nil
	if !g.Equal(w) {
		t.Errorf("bindings = %+v, want %+v", g, w)
	}
}

func testLookupHit(t *testing.T, open Open) {
	keys := []pskstore.Key{NewKey(t, []byte("device-0001")), fullKey(t)}
	s := open(t, keys)
	for _, want := range keys {
		got, err := lookup(t, s, want.Identity)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", want.Identity, err)
		}
		mustEqual(t, got, want)
	}
}

func testLookupCopy(t *testing.T, open Open) {
	want := fullKey(t)
	s := open(t, []pskstore.Key{want})
	got, err := lookup(t, s, want.Identity)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{got.Identity, got.Secret, got.ImportContext} {
		for i := range b {
			b[i] ^= 0xff
		}
	}
	got.Endpoint = "mutated"
	again, err := lookup(t, s, want.Identity)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, again, want)
}

func testStoreCopiesInput(t *testing.T, open Open) {
	k := fullKey(t)
	want := k.Clone()
	s := open(t, []pskstore.Key{k})
	k.Secret[0] ^= 0xff
	k.ImportContext[0] ^= 0xff
	got, err := lookup(t, s, want.Identity)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, want)
	k.Identity[0] ^= 0xff
	if _, err := lookup(t, s, want.Identity); err != nil {
		t.Errorf("store shares identity memory with its input: %v", err)
	}
}

func testUnknown(t *testing.T, open Open) {
	s := open(t, []pskstore.Key{NewKey(t, []byte("device-0001"))})
	for _, id := range [][]byte{[]byte("device-0002"), []byte("device-000"), []byte("device-00011"), {}, nil} {
		_, err := lookup(t, s, id)
		if !errors.Is(err, pskstore.ErrUnknownIdentity) {
			t.Errorf("Lookup(%q) error = %v, want ErrUnknownIdentity", id, err)
			continue
		}
		if len(id) > 0 && strings.Contains(err.Error(), string(id)) {
			t.Errorf("error %q names the identity (R9)", err)
		}
	}
}

func testByteExact(t *testing.T, open Open) {
	ids := [][]byte{[]byte("device"), []byte("Device"), []byte("device\x00"), []byte("caf\u00e9"), []byte("cafe\u0301")}
	keys := make([]pskstore.Key, len(ids))
	for i, id := range ids {
		keys[i] = NewKey(t, id)
	}
	s := open(t, keys)
	for _, want := range keys {
		got, err := lookup(t, s, want.Identity)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", want.Identity, err)
		}
		mustEqual(t, got, want)
	}
	for _, id := range [][]byte{[]byte("DEVICE"), []byte("device "), []byte(" device"), []byte("device\x00\x00"), []byte("cafe")} {
		if _, err := lookup(t, s, id); !errors.Is(err, pskstore.ErrUnknownIdentity) {
			t.Errorf("Lookup(%q) error = %v, want ErrUnknownIdentity", id, err)
		}
	}
}

func testBinary(t *testing.T, open Open) {
	long := bytes.Repeat([]byte{0xa5, 0x00}, pskstore.DefaultMaxIdentityLen/2)
	ids := [][]byte{{0x00}, {0x00, 0xa1, 0xff}, {0xff, 0xfe, 0xfd, 0x80}, {0xc3, 0x28}, long}
	keys := make([]pskstore.Key, len(ids))
	for i, id := range ids {
		keys[i] = NewKey(t, id)
	}
	s := open(t, keys)
	for _, want := range keys {
		got, err := lookup(t, s, want.Identity)
		if err != nil {
			t.Fatalf("Lookup(%x): %v", want.Identity, err)
		}
		mustEqual(t, got, want)
	}
	for _, id := range [][]byte{{0x00, 0x00}, {0x00, 0xa1}, long[:len(long)-1], {0xff, 0xfe, 0xfd, 0x80, 0x00}} {
		if _, err := lookup(t, s, id); !errors.Is(err, pskstore.ErrUnknownIdentity) {
			t.Errorf("Lookup(%x) error = %v, want ErrUnknownIdentity", id, err)
		}
	}
}

func testContext(t *testing.T, open Open) {
	k := NewKey(t, []byte("device-0001"))
	s := open(t, []pskstore.Key{k})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Lookup(ctx, k.Identity); !errors.Is(err, context.Canceled) {
		t.Errorf("Lookup on a canceled context: error = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := s.Lookup(ctx, k.Identity); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lookup past the deadline: error = %v, want context.DeadlineExceeded", err)
	}
}

func testConcurrent(t *testing.T, open Open) {
	keys := make([]pskstore.Key, 32)
	for i := range keys {
		keys[i] = NewKey(t, fmt.Appendf(nil, "device-%04d", i))
	}
	s := open(t, keys)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				want := keys[(g+i)%len(keys)]
				got, err := s.Lookup(context.Background(), want.Identity)
				if err != nil || !bytes.Equal(got.Secret, want.Secret) {
					t.Errorf("concurrent Lookup(%q): %v", want.Identity, err)
					return
				}
				got.Secret[0] ^= 0xff // callers own their copy
				if _, err := s.Lookup(context.Background(), []byte("absent")); !errors.Is(err, pskstore.ErrUnknownIdentity) {
					t.Errorf("concurrent Lookup(absent): %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func testWatchCloses(t *testing.T, open Open) {
	s := open(t, []pskstore.Key{NewKey(t, []byte("device-0001"))})
	w, ok := s.(pskstore.Watcher)
	if !ok {
		t.Skip("store does not implement pskstore.Watcher")
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := w.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed after its context was canceled")
		}
	}
}
