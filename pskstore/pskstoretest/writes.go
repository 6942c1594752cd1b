package pskstoretest

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// RunWrites runs the conformance suite of key administration against
// stores built by open, which must implement pskstore.Lister, Putter,
// Deleter, Rotator and Replacer: one set of expectations for writes (all or
// nothing, CheckAdd against the stored keys, R4 and R7 duplicates named by
// index and tag, R10 notifications to watchers, no key material in errors)
// whatever the storage. Each subtest opens its own store. Notifications are
// checked when the store is also a pskstore.Watcher.
func RunWrites(t *testing.T, open Open) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, w *writable)
	}{
		{"PutAddsR10", testPut},
		{"PutAllOrNothing", testPutAllOrNothing},
		{"PutRefusesStoredIdentityR7", testPutDuplicate},
		{"PutRefusesSharedKeyR4", testPutSharedKey},
		{"DeleteRevokesR10", testDelete},
		{"RotateR10", testRotate},
		{"RotateRefusesSharedKeyR4", testRotateSharedKey},
		{"ReplaceR6", testReplace},
		{"ReplaceAllOrNothing", testReplaceAllOrNothing},
		{"KeysSorted", testKeysSorted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := []pskstore.Key{NewKey(t, []byte("device-0001")), fullKey(t)}
			tt.fn(t, newWritable(t, open(t, keys), keys))
		})
	}
}

// writable is a store under test with what the suite knows of it.
type writable struct {
	s       pskstore.Store
	l       pskstore.Lister
	p       pskstore.Putter
	d       pskstore.Deleter
	r       pskstore.Rotator
	x       pskstore.Replacer
	changes <-chan pskstore.Change // nil if the store is not a Watcher
	initial []pskstore.Key
	secrets [][]byte // every key given to the store, for leak checks
	markers int
}

func newWritable(t *testing.T, s pskstore.Store, initial []pskstore.Key) *writable {
	t.Helper()
	w := &writable{s: s, initial: initial}
	var ok [5]bool
	w.l, ok[0] = s.(pskstore.Lister)
	w.p, ok[1] = s.(pskstore.Putter)
	w.d, ok[2] = s.(pskstore.Deleter)
	w.r, ok[3] = s.(pskstore.Rotator)
	w.x, ok[4] = s.(pskstore.Replacer)
	for i, name := range []string{"Lister", "Putter", "Deleter", "Rotator", "Replacer"} {
		if !ok[i] {
			t.Fatalf("store %T does not implement pskstore.%s", s, name)
		}
	}
	for _, k := range initial {
		w.secrets = append(w.secrets, k.Secret)
	}
	if watcher, ok := s.(pskstore.Watcher); ok {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		ch, err := watcher.Watch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w.changes = ch
	}
	return w
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func (w *writable) newKey(t *testing.T, id string) pskstore.Key {
	k := NewKey(t, []byte(id))
	w.secrets = append(w.secrets, k.Secret)
	return k
}

// expect checks the next changes reported, in order; without a Watcher it
// does nothing.
func (w *writable) expect(t *testing.T, want ...pskstore.Change) {
	t.Helper()
	if w.changes == nil {
		return
	}
	for _, c := range want {
		select {
		case got, ok := <-w.changes:
			if !ok {
				t.Fatal("watch channel closed")
			}
			if got.Kind != c.Kind || !bytes.Equal(got.Identity, c.Identity) {
				t.Fatalf("change %v %q, want %v %q", got.Kind, got.Identity, c.Kind, c.Identity)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %v %q change within 10s", c.Kind, c.Identity)
		}
	}
}

// expectNone checks that nothing was reported since the last expect: it
// adds a marker identity, and the next change must be the marker's.
func (w *writable) expectNone(t *testing.T) {
	t.Helper()
	if w.changes == nil {
		return
	}
	w.markers++
	m := w.newKey(t, fmt.Sprintf("marker-%d", w.markers))
	if err := w.p.Put(ctx(t), m); err != nil {
		t.Fatal(err)
	}
	w.expect(t, pskstore.Change{Kind: pskstore.Added, Identity: m.Identity})
}

// noLeak fails if err shows any key given to the store (R9).
func (w *writable) noLeak(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	for _, s := range w.secrets {
		if strings.Contains(msg, hex.EncodeToString(s)) || strings.Contains(msg, string(s)) {
			t.Fatalf("error %q shows key material (R9)", msg)
		}
	}
}

// finding returns the policy finding in err of rule and key index.
func finding(t *testing.T, err error, rule pskstore.Rule, index int) *pskstore.PolicyError {
	t.Helper()
	for _, f := range pskstore.FindingsOf(err) {
		if f.Rule == rule && f.Index == index && f.Severity == pskstore.SeverityMust {
			return f
		}
	}
	t.Fatalf("error %v: no %s finding for keys[%d]", err, rule, index)
	return nil
}

func (w *writable) mustAbsent(t *testing.T, id []byte) {
	t.Helper()
	if _, err := lookup(t, w.s, id); !errors.Is(err, pskstore.ErrUnknownIdentity) {
		t.Fatalf("Lookup(%q) = %v, want ErrUnknownIdentity", id, err)
	}
}

func (w *writable) mustHave(t *testing.T, want pskstore.Key) {
	t.Helper()
	got, err := lookup(t, w.s, want.Identity)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", want.Identity, err)
	}
	mustEqual(t, got, want)
}

func testPut(t *testing.T, w *writable) {
	a := w.newKey(t, "device-0002")
	if err := w.p.Put(ctx(t), a); err != nil {
		t.Fatal(err)
	}
	w.mustHave(t, a)
	w.expect(t, pskstore.Change{Kind: pskstore.Added, Identity: a.Identity})
	b, c := w.newKey(t, "device-0003"), w.newKey(t, "\x00\xa1binary")
	c.ServerName, c.Versions, c.Modes = "gw.example.com", pskstore.DTLS13, pskstore.ModeDHE|pskstore.ModeKE
	if err := w.p.Put(ctx(t), b, c); err != nil {
		t.Fatal(err)
	}
	w.mustHave(t, b)
	w.mustHave(t, c)
	for _, k := range w.initial {
		w.mustHave(t, k)
	}
}

func testPutAllOrNothing(t *testing.T, w *writable) {
	good, short := w.newKey(t, "device-good"), w.newKey(t, "device-short")
	short.Secret = short.Secret[:15]
	err := w.p.Put(ctx(t), good, short)
	finding(t, err, "R1", 1)
	w.noLeak(t, err)
	w.mustAbsent(t, good.Identity)
	w.mustAbsent(t, short.Identity)
	w.expectNone(t)
}

func testPutDuplicate(t *testing.T, w *writable) {
	dup := w.newKey(t, string(w.initial[0].Identity))
	fresh := w.newKey(t, "device-fresh")
	err := w.p.Put(ctx(t), fresh, dup)
	if !errors.Is(err, pskstore.ErrDuplicateIdentity) {
		t.Fatalf("Put of a stored identity: %v, want ErrDuplicateIdentity", err)
	}
	f := finding(t, err, "R7", 1)
	if f.With == nil || f.With.Index != pskstore.InStore {
		t.Errorf("finding %v does not name the stored key", f)
	}
	if strings.Contains(err.Error(), string(dup.Identity)) {
		t.Errorf("error %q shows the identity (R9)", err)
	}
	w.noLeak(t, err)
	w.mustHave(t, w.initial[0]) // never replaced
	w.mustAbsent(t, fresh.Identity)

	twice := w.newKey(t, "device-twice")
	again := w.newKey(t, "device-twice")
	f = finding(t, w.p.Put(ctx(t), twice, again), "R7", 1)
	if f.With == nil || f.With.Index != 0 {
		t.Errorf("finding %v does not name keys[0]", f)
	}
	w.expectNone(t)
}

func testPutSharedKey(t *testing.T, w *writable) {
	copyOf := w.newKey(t, "device-copy")
	copyOf.Secret = bytes.Clone(w.initial[1].Secret)
	err := w.p.Put(ctx(t), copyOf)
	f := finding(t, err, "R4", 0)
	if f.With == nil || f.With.Index != pskstore.InStore {
		t.Errorf("finding %v does not name the stored key", f)
	}
	w.noLeak(t, err)
	a, b := w.newKey(t, "device-a"), w.newKey(t, "device-b")
	b.Secret = bytes.Clone(a.Secret)
	if f := finding(t, w.p.Put(ctx(t), a, b), "R4", 1); f.With == nil || f.With.Index != 0 {
		t.Errorf("finding %v does not name keys[0]", f)
	}
	w.mustAbsent(t, copyOf.Identity)
	w.mustAbsent(t, a.Identity)
	w.expectNone(t)
}

func testDelete(t *testing.T, w *writable) {
	id := w.initial[0].Identity
	if err := w.d.Delete(ctx(t), id); err != nil {
		t.Fatal(err)
	}
	w.mustAbsent(t, id)
	w.mustHave(t, w.initial[1])
	w.expect(t, pskstore.Change{Kind: pskstore.Revoked, Identity: id})
	if err := w.d.Delete(ctx(t), id); !errors.Is(err, pskstore.ErrUnknownIdentity) {
		t.Fatalf("second Delete: %v, want ErrUnknownIdentity", err)
	}
	w.expectNone(t)
}

func testRotate(t *testing.T, w *writable) {
	k := w.initial[1]
	secret := w.newKey(t, "unused").Secret
	if err := w.r.Rotate(ctx(t), k.Identity, secret); err != nil {
		t.Fatal(err)
	}
	want := k.Clone()
	want.Secret = secret
	w.mustHave(t, want) // bindings kept
	w.expect(t, pskstore.Change{Kind: pskstore.Rotated, Identity: k.Identity})
	if err := w.r.Rotate(ctx(t), k.Identity, secret); err != nil {
		t.Fatal(err)
	}
	w.expectNone(t) // the same key: nothing to rotate
	if err := w.r.Rotate(ctx(t), []byte("absent"), secret); !errors.Is(err, pskstore.ErrUnknownIdentity) {
		t.Fatalf("Rotate of an absent identity: %v, want ErrUnknownIdentity", err)
	}
	err := w.r.Rotate(ctx(t), k.Identity, secret[:15])
	finding(t, err, "R1", 0)
	w.noLeak(t, err)
	w.mustHave(t, want)

	// An exemption granted for a weak key does not survive a strong one (R2).
	weak := w.newKey(t, "device-weak")
	weak.Secret, weak.AllowLowEntropy = pskstore.Secret("correct horse battery staple"), true
	w.secrets = append(w.secrets, weak.Secret)
	if err := w.p.Put(ctx(t), weak); err != nil {
		t.Fatal(err)
	}
	w.expect(t, pskstore.Change{Kind: pskstore.Added, Identity: weak.Identity})
	strong := w.newKey(t, "unused-2").Secret
	if err := w.r.Rotate(ctx(t), weak.Identity, strong); err != nil {
		t.Fatal(err)
	}
	got, err := lookup(t, w.s, weak.Identity)
	if err != nil || got.AllowLowEntropy {
		t.Errorf("after rotating to a strong key: AllowLowEntropy %v, %v", got.AllowLowEntropy, err)
	}
}

func testRotateSharedKey(t *testing.T, w *writable) {
	a := w.initial[0]
	err := w.r.Rotate(ctx(t), a.Identity, bytes.Clone(w.initial[1].Secret))
	f := finding(t, err, "R4", 0)
	if f.With == nil || f.With.Index != pskstore.InStore {
		t.Errorf("finding %v does not name the stored key", f)
	}
	w.noLeak(t, err)
	w.mustHave(t, a)
	w.expectNone(t)
}

func testReplace(t *testing.T, w *writable) {
	old := w.initial[0]
	x, y := w.newKey(t, "imported-1"), w.newKey(t, "imported-2")
	if err := w.x.Replace(ctx(t), old.Identity, []pskstore.Key{x, y}); err != nil {
		t.Fatal(err)
	}
	w.mustAbsent(t, old.Identity)
	w.mustHave(t, x)
	w.mustHave(t, y)
	w.expect(t, pskstore.Change{Kind: pskstore.Revoked, Identity: old.Identity},
		pskstore.Change{Kind: pskstore.Added, Identity: x.Identity}, pskstore.Change{Kind: pskstore.Added, Identity: y.Identity})
	if err := w.x.Replace(ctx(t), old.Identity, []pskstore.Key{w.newKey(t, "z")}); !errors.Is(err, pskstore.ErrUnknownIdentity) {
		t.Fatalf("Replace of an absent identity: %v, want ErrUnknownIdentity", err)
	}
	w.expectNone(t)
}

func testReplaceAllOrNothing(t *testing.T, w *writable) {
	old, other := w.initial[0], w.initial[1]
	fresh := w.newKey(t, "imported-1")
	dup := w.newKey(t, string(other.Identity))
	err := w.x.Replace(ctx(t), old.Identity, []pskstore.Key{fresh, dup})
	if !errors.Is(err, pskstore.ErrDuplicateIdentity) {
		t.Fatalf("Replace with a stored identity: %v, want ErrDuplicateIdentity", err)
	}
	finding(t, err, "R7", 1)
	shared := w.newKey(t, "imported-2")
	shared.Secret = bytes.Clone(other.Secret)
	err = w.x.Replace(ctx(t), old.Identity, []pskstore.Key{fresh, shared})
	finding(t, err, "R4", 1)
	w.noLeak(t, err)
	// The replaced identity's own key material may be reused: it is gone.
	reuse := w.newKey(t, "imported-3")
	reuse.Secret = bytes.Clone(old.Secret)
	if err := w.x.Replace(ctx(t), old.Identity, []pskstore.Key{reuse}); err != nil {
		t.Fatalf("Replace reusing the replaced key: %v", err)
	}
	w.mustAbsent(t, fresh.Identity)
	w.mustHave(t, other)
	w.mustHave(t, reuse)
}

func testKeysSorted(t *testing.T, w *writable) {
	if err := w.p.Put(ctx(t), w.newKey(t, "a-first"), w.newKey(t, "\x00binary")); err != nil {
		t.Fatal(err)
	}
	keys, err := w.l.Keys(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range keys {
		ids = append(ids, string(k.Identity))
	}
	want := []string{"\x00binary", "a-first", "device-0001", "device-full"}
	if fmt.Sprintf("%q", ids) != fmt.Sprintf("%q", want) {
		t.Fatalf("Keys = %q, want %q", ids, want)
	}
	for _, k := range keys {
		if k.Hash == 0 || k.Versions == 0 || k.Modes == 0 {
			t.Errorf("key %q not normalized", k.Identity)
		}
	}
	keys[0].Secret[0] ^= 0xff // callers own their copy
	again, _ := w.l.Keys(ctx(t))
	if bytes.Equal(again[0].Secret, keys[0].Secret) {
		t.Error("Keys shares memory with the store")
	}
}
