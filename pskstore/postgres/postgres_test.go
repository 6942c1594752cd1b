package postgres

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/pskstoretest"
)

func TestConformance(t *testing.T) {
	t.Run("Put", func(t *testing.T) {
		pskstoretest.Run(t, func(t *testing.T, keys []pskstore.Key) pskstore.Store {
			s := newDB(t).open(t, appName(t, "conf"))
			for _, k := range keys {
				if err := s.Put(ctxT(t), k); err != nil {
					t.Fatal(err)
				}
			}
			return s
		})
	})
	t.Run("PutMany", func(t *testing.T) {
		pskstoretest.Run(t, func(t *testing.T, keys []pskstore.Key) pskstore.Store {
			s := newDB(t).open(t, appName(t, "conf"))
			if err := s.PutMany(ctxT(t), keys, nil); err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
	t.Run("Writes", func(t *testing.T) {
		pskstoretest.RunWrites(t, func(t *testing.T, keys []pskstore.Key) pskstore.Store {
			s := newDB(t).open(t, appName(t, "conf"), withKEK(testKEK(t)))
			if err := s.PutMany(ctxT(t), keys, nil); err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
}

func TestMigrationsConcurrentAndIdempotent(t *testing.T) {
	d := newDB(t)
	const replicas = 4
	stores := make([]*Store, replicas)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() {
			s, err := Open(context.Background(), d.dsn(t, appName(t, "mig")), WithPolicy(pskstore.Options{Tagger: testTagger}))
			if err != nil {
				t.Errorf("concurrent Open %d: %v", i, err)
				return
			}
			t.Cleanup(func() { s.Close() })
			stores[i] = s
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Opening again applies nothing.
	d.open(t, appName(t, "mig"))

	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := admin(t).QueryRow(ctxT(t), `SELECT count(*) FROM `+d.schema+`.psk_schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(ms) {
		t.Errorf("psk_schema_migrations has %d rows, want %d", n, len(ms))
	}

	// R4 across replicas: they share the fingerprint secret kept in the
	// database, so one replica refuses key material another one stored.
	a := pskstoretest.NewKey(t, []byte("device-a"))
	if err := stores[0].Put(ctxT(t), a); err != nil {
		t.Fatal(err)
	}
	var pe *pskstore.PolicyError
	err = stores[3].Put(ctxT(t), pskstore.Key{Identity: []byte("device-b"), Secret: a.Secret})
	if !errors.As(err, &pe) || pe.Rule != "R4" {
		t.Fatalf("Put of device-a's key under device-b on another replica: %v, want R4", err)
	}
}

func TestFingerprintKey(t *testing.T) {
	secret := bytes.Repeat([]byte{0x5a}, 32)
	d := newDB(t)
	d.open(t, appName(t, "fk"), WithFingerprintKey(secret))
	d.open(t, appName(t, "fk"), WithFingerprintKey(secret))
	var stored []byte
	if err := admin(t).QueryRow(ctxT(t), `SELECT fingerprint_key FROM `+d.schema+`.psk_store`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != nil {
		t.Error("a FingerprintKey given to Open was stored in the database")
	}
	for name, key := range map[string][]byte{"other key": bytes.Repeat([]byte{0xa5}, 32), "no key": nil} {
		_, err := Open(ctxT(t), d.dsn(t, appName(t, "fk")), WithFingerprintKey(key))
		if err == nil {
			t.Errorf("%s: Open succeeded on a store created with another FingerprintKey", name)
		} else if strings.Contains(err.Error(), hex.EncodeToString(secret)) {
			t.Errorf("%s: error shows the secret: %v", name, err)
		}
	}

	// Without a FingerprintKey the first Open stores a random one.
	d2 := newDB(t)
	d2.open(t, appName(t, "fk"))
	if err := admin(t).QueryRow(ctxT(t), `SELECT fingerprint_key FROM `+d2.schema+`.psk_store`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if len(stored) != 32 {
		t.Errorf("stored fingerprint key is %d bytes, want 32", len(stored))
	}
}

func TestOpenRefuses(t *testing.T) {
	d := newDB(t)
	p := newProxy(t, d)
	p.down()
	if _, err := Open(ctxT(t), d.dsnVia(p.addr, "x")); !errors.Is(err, pskstore.ErrUnavailable) {
		t.Errorf("Open with the database down: %v, want ErrUnavailable", err)
	}
	for name, tt := range map[string]struct {
		dsn string
		opt Option
	}{
		"empty DSN":             {"", WithMaxConns(0)},
		"bad DSN":               {"postgres://u:secretpw@[::1", WithMaxConns(0)},
		"identity limit":        {d.dsn(t, "x"), WithPolicy(pskstore.Options{MaxIdentityLen: MaxIdentityLen + 1})},
		"short fingerprint key": {d.dsn(t, "x"), WithFingerprintKey([]byte("short"))},
	} {
		s, err := Open(ctxT(t), tt.dsn, tt.opt)
		if err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded", name)
			continue
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%s: error shows the password: %v", name, err)
		}
	}
}

// TestPutRefuses checks the policy on writes (R1, R2, R4, R7, R8) and that
// no error names a key or an identity (R9).
func TestPutRefuses(t *testing.T) {
	s := newDB(t).open(t, appName(t, "put"))
	a := pskstoretest.NewKey(t, []byte("device-a"))
	if err := s.Put(ctxT(t), a); err != nil {
		t.Fatal(err)
	}
	other := pskstoretest.NewKey(t, []byte("x"))
	long := bytes.Repeat([]byte("i"), 70000)
	tests := []struct {
		name  string
		key   pskstore.Key
		rule  pskstore.Rule // "" for ErrDuplicateIdentity
		field string
		msg   string
	}{
		{"R1 short key", pskstore.Key{Identity: []byte("device-short"), Secret: other.Secret[:15]}, "R1", "Secret", "key is 15 bytes"},
		{"R2 password", pskstore.Key{Identity: []byte("device-pw"), Secret: pskstore.Secret("correct horse battery")}, "R2", "Secret", "low-entropy"},
		{"R4 key of another identity", pskstore.Key{Identity: []byte("device-b"), Secret: a.Secret}, "R4", "Secret", "same key material as identity " + testTagger.Tag(a.Identity)},
		{"R4 group without context", pskstore.Key{Identity: []byte("device-g"), Secret: other.Secret, Group: true}, "R4", "Group", "importer context"},
		{"R7 empty identity", pskstore.Key{Secret: other.Secret}, "R7", "Identity", "0 bytes"},
		{"R7 70000-byte identity", pskstore.Key{Identity: long, Secret: other.Secret}, "R7", "Identity", "identity is 70000 bytes, allowed 1..128"},
		{"R8 resumption prefix", pskstore.Key{Identity: []byte(pskstore.ResumptionPrefix + "1"), Secret: other.Secret}, "R8", "Identity", "resumption"},
		{"duplicate identity", pskstore.Key{Identity: a.Identity, Secret: other.Secret}, "", "", "identity already in the store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Put(ctxT(t), tt.key)
			if err == nil {
				t.Fatal("Put succeeded")
			}
			if tt.rule == "" {
				if !errors.Is(err, pskstore.ErrDuplicateIdentity) {
					t.Fatalf("error = %v, want ErrDuplicateIdentity", err)
				}
			} else {
				var pe *pskstore.PolicyError
				if !errors.As(err, &pe) || pe.Rule != tt.rule || pe.Field != tt.field {
					t.Fatalf("error = %v, want policy %s on %s", err, tt.rule, tt.field)
				}
				if len(tt.key.Identity) > 0 && pe.Tag != testTagger.Tag(tt.key.Identity) {
					t.Errorf("finding tags the key %q, want %q", pe.Tag, testTagger.Tag(tt.key.Identity))
				}
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.msg) {
				t.Errorf("error %q does not say %q", msg, tt.msg)
			}
			if len(tt.key.Identity) > 0 && !strings.Contains(msg, testTagger.Tag(tt.key.Identity)) {
				t.Errorf("error %q does not name the entry by tag %s", msg, testTagger.Tag(tt.key.Identity))
			}
			for _, secret := range [][]byte{tt.key.Secret, a.Secret} {
				if len(secret) > 0 && (strings.Contains(msg, hex.EncodeToString(secret)) || strings.Contains(msg, string(secret))) {
					t.Errorf("error %q shows key material (R9)", msg)
				}
			}
			if len(tt.key.Identity) > 3 && strings.Contains(msg, string(tt.key.Identity)) {
				t.Errorf("error %q shows the identity (R9)", msg)
			}
		})
	}
	if n, err := s.Count(ctxT(t)); err != nil || n != 1 {
		t.Errorf("Count after refused Puts = %d, %v; want 1", n, err)
	}
	if _, err := s.Lookup(ctxT(t), long); !errors.Is(err, pskstore.ErrUnknownIdentity) {
		t.Errorf("Lookup of a 70000-byte identity: %v, want ErrUnknownIdentity", err)
	}
}

// TestLongIdentity stores the longest identity the backend allows.
func TestLongIdentity(t *testing.T) {
	s := newDB(t).open(t, appName(t, "long"), WithPolicy(pskstore.Options{Tagger: testTagger, MaxIdentityLen: MaxIdentityLen}))
	k := pskstoretest.NewKey(t, bytes.Repeat([]byte{0xa5, 0x5a, 0x00}, MaxIdentityLen/3+1)[:MaxIdentityLen])
	if err := s.Put(ctxT(t), k); err != nil {
		t.Fatal(err)
	}
	got, err := s.Lookup(ctxT(t), k.Identity)
	if err != nil || !bytes.Equal(got.Secret, k.Secret) {
		t.Fatalf("Lookup of a %d-byte identity: %v", MaxIdentityLen, err)
	}
	var pe *pskstore.PolicyError
	if err := s.Put(ctxT(t), pskstoretest.NewKey(t, bytes.Repeat([]byte("x"), MaxIdentityLen+1))); !errors.As(err, &pe) || pe.Rule != "R7" {
		t.Fatalf("Put of a %d-byte identity: %v, want R7", MaxIdentityLen+1, err)
	}
}

func TestRotateDeleteKeys(t *testing.T) {
	s := newDB(t).open(t, appName(t, "rot"))
	ctx := ctxT(t)
	a := pskstoretest.NewKey(t, []byte("device-a"))
	a.ServerName = "dm.example.com"
	b := pskstoretest.NewKey(t, []byte("device-b"))
	for _, k := range []pskstore.Key{b, a} {
		if err := s.Put(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	fresh := pskstoretest.NewKey(t, nil).Secret
	if err := s.Rotate(ctx, a.Identity, fresh); err != nil {
		t.Fatal(err)
	}
	got, err := s.Lookup(ctx, a.Identity)
	if err != nil || !bytes.Equal(got.Secret, fresh) || got.ServerName != a.ServerName {
		t.Fatalf("Lookup after Rotate: %v (key rotated: %v, bindings kept: %v)", err, bytes.Equal(got.Secret, fresh), got.ServerName == a.ServerName)
	}
	// The old key is free again (R4 compares current keys only).
	if err := s.Put(ctx, pskstore.Key{Identity: []byte("device-c"), Secret: a.Secret}); err != nil {
		t.Fatalf("old key material not released by Rotate: %v", err)
	}

	var pe *pskstore.PolicyError
	if err := s.Rotate(ctx, a.Identity, b.Secret); !errors.As(err, &pe) || pe.Rule != "R4" {
		t.Errorf("Rotate to another identity's key: %v, want R4", err)
	} else if strings.Contains(err.Error(), hex.EncodeToString(b.Secret)) {
		t.Errorf("error shows the key: %v", err)
	}
	if err := s.Rotate(ctx, a.Identity, fresh[:15]); !errors.As(err, &pe) || pe.Rule != "R1" {
		t.Errorf("Rotate to a 15-byte key: %v, want R1", err)
	}
	if err := s.Rotate(ctx, []byte("absent"), fresh); !errors.Is(err, pskstore.ErrUnknownIdentity) {
		t.Errorf("Rotate of an absent identity: %v, want ErrUnknownIdentity", err)
	}
	if err := s.Rotate(ctx, a.Identity, fresh); err != nil {
		t.Errorf("Rotate to the same key: %v", err)
	}

	keys, err := s.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range keys {
		ids = append(ids, string(k.Identity))
	}
	if strings.Join(ids, ",") != "device-a,device-b,device-c" {
		t.Errorf("Keys = %v, want sorted device-a,device-b,device-c", ids)
	}

	if err := s.Delete(ctx, a.Identity); err != nil {
		t.Fatalf("Delete of a present identity: %v", err)
	}
	if err := s.Delete(ctx, a.Identity); !errors.Is(err, pskstore.ErrUnknownIdentity) {
		t.Fatalf("Delete of an absent identity = %v, want ErrUnknownIdentity", err)
	}
	if _, err := s.Lookup(ctx, a.Identity); !errors.Is(err, pskstore.ErrUnknownIdentity) {
		t.Fatalf("Lookup after Delete: %v", err)
	}
	if n, err := s.Count(ctx); err != nil || n != 2 {
		t.Fatalf("Count = %d, %v; want 2", n, err)
	}
}

func TestPutMany(t *testing.T) {
	s := newDB(t).open(t, appName(t, "many"))
	ctx := ctxT(t)
	defer func(n int) { progressEvery = n }(progressEvery)
	progressEvery = 100
	keys := newKeys(t, "bulk", 2500)
	var calls []int
	if err := s.PutMany(ctx, keys, func(n int) { calls = append(calls, n) }); err != nil {
		t.Fatal(err)
	}
	var want []int
	for n := 100; n <= len(keys); n += 100 {
		want = append(want, n)
	}
	if !slices.Equal(calls, want) {
		t.Errorf("progress calls = %v, want %v", calls, want)
	}
	if n, _ := s.Count(ctx); n != int64(len(keys)) {
		t.Fatalf("Count = %d, want %d", n, len(keys))
	}
	got, err := s.Lookup(ctx, keys[1234].Identity)
	if err != nil || !bytes.Equal(got.Secret, keys[1234].Secret) {
		t.Fatalf("Lookup after PutMany: %v", err)
	}

	fresh := newKeys(t, "more", 3)
	var pe *pskstore.PolicyError
	// An identity already stored: nothing of the batch is written.
	dup := []pskstore.Key{fresh[0], {Identity: keys[7].Identity, Secret: fresh[1].Secret}, fresh[2]}
	var dupErr *pskstore.PolicyError
	if err := s.PutMany(ctx, dup, nil); !errors.Is(err, pskstore.ErrDuplicateIdentity) || !errors.As(err, &dupErr) || dupErr.Index != 1 {
		t.Errorf("PutMany with a stored identity: %v, want ErrDuplicateIdentity at keys[1]", err)
	}
	// Key material already stored under another identity (R4).
	shared := []pskstore.Key{fresh[0], {Identity: []byte("other"), Secret: keys[9].Secret}}
	if err := s.PutMany(ctx, shared, nil); !errors.As(err, &pe) || pe.Rule != "R4" || pe.Index != 1 {
		t.Errorf("PutMany with stored key material: %v, want R4 at index 1", err)
	} else if strings.Contains(err.Error(), hex.EncodeToString(keys[9].Secret)) {
		t.Errorf("error shows the key: %v", err)
	}
	// Findings within the batch, by CheckKeys.
	inBatch := []pskstore.Key{fresh[0], fresh[1], {Identity: fresh[0].Identity, Secret: fresh[2].Secret}}
	if err := s.PutMany(ctx, inBatch, nil); !errors.As(err, &pe) || pe.Rule != "R7" || pe.Index != 2 {
		t.Errorf("PutMany with a repeated identity: %v, want R7 at index 2", err)
	}
	if err := s.PutMany(ctx, []pskstore.Key{fresh[0], {Identity: []byte("s"), Secret: fresh[1].Secret[:15]}}, nil); !errors.As(err, &pe) || pe.Rule != "R1" || pe.Index != 1 {
		t.Errorf("PutMany with a short key: %v, want R1 at index 1", err)
	}
	if n, _ := s.Count(ctx); n != int64(len(keys)) {
		t.Fatalf("refused PutMany calls wrote keys: Count = %d, want %d", n, len(keys))
	}
	if err := s.PutMany(ctx, fresh, nil); err != nil {
		t.Fatalf("PutMany after refusals: %v", err)
	}
}

// TestPutManyFindingsAsCheckKeys: PutMany's own batch check reports what
// pskstore.CheckKeys reports as MUST findings.
func TestPutManyFindingsAsCheckKeys(t *testing.T) {
	s := newDB(t).open(t, appName(t, "many"))
	k := newKeys(t, "k", 6)
	batches := map[string][]pskstore.Key{
		"single-key rules": {k[0], {Identity: []byte("short"), Secret: k[1].Secret[:15]}, k[2],
			{Identity: []byte("pw"), Secret: pskstore.Secret("passwordpassword")}, {Secret: k[3].Secret}},
		"store-wide rules": {k[0], k[1], {Identity: k[0].Identity, Secret: k[2].Secret}, {Identity: []byte("b"), Secret: k[1].Secret},
			k[3], {Identity: k[3].Identity, Secret: k[3].Secret}, {Identity: []byte("c"), Secret: k[4].Secret}, {Identity: []byte("d"), Secret: k[4].Secret}},
	}
	for name, keys := range batches {
		t.Run(name, func(t *testing.T) {
			want := pskstore.CheckKeys(keys, s.policy).Must()
			err := s.PutMany(ctxT(t), keys, nil)
			if err == nil {
				t.Fatal("PutMany succeeded")
			}
			if got := strings.TrimPrefix(err.Error(), "postgres: put many: "); got != want.Err().Error() {
				t.Errorf("PutMany error:\n%s\nCheckKeys:\n%s", got, want.Err())
			}
		})
	}
}

func TestClose(t *testing.T) {
	s := newDB(t).open(t, appName(t, "close"))
	if _, err := s.Watch(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := s.Lookup(ctxT(t), []byte("device"))
	if !errors.Is(err, pskstore.ErrUnavailable) || !errors.Is(err, ErrClosed) {
		t.Errorf("Lookup after Close: %v, want ErrUnavailable and ErrClosed", err)
	}
	if _, err := s.Watch(ctxT(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch after Close: %v, want ErrClosed", err)
	}
	if err := s.Put(ctxT(t), pskstoretest.NewKey(t, []byte("device"))); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close: %v, want ErrClosed", err)
	}
}

// TestReplace: an RFC 9258 import replaces the external PSK by its
// imported keys in one transaction (R6), published as a revocation and
// additions; a refused key leaves the store as it was.
func TestReplace(t *testing.T) {
	d := newDB(t)
	s := d.open(t, appName(t, "repl"))
	ctx := ctxT(t)
	keys := newKeys(t, "device", 3)
	if err := s.PutMany(ctx, keys, nil); err != nil {
		t.Fatal(err)
	}
	ch, err := d.open(t, appName(t, "watch")).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fresh := newKeys(t, "imported", 3)
	if err := s.Replace(ctx, keys[0].Identity, fresh[:2]); err != nil {
		t.Fatal(err)
	}
	expectChange(t, ch, within, pskstore.Revoked, keys[0].Identity)
	expectChange(t, ch, within, pskstore.Added, fresh[0].Identity)
	expectChange(t, ch, within, pskstore.Added, fresh[1].Identity)
	if _, err := s.Lookup(ctx, keys[0].Identity); !errors.Is(err, pskstore.ErrUnknownIdentity) {
		t.Errorf("the replaced identity is still stored: %v", err)
	}

	var pe *pskstore.PolicyError
	for _, tt := range []struct {
		name string
		id   []byte
		keys []pskstore.Key
		ok   func(error) bool
	}{
		{"absent identity", []byte("nope"), fresh[2:], func(err error) bool { return errors.Is(err, pskstore.ErrUnknownIdentity) }},
		{"identity stored", keys[1].Identity, []pskstore.Key{fresh[2], {Identity: keys[2].Identity, Secret: newKeys(t, "x", 1)[0].Secret}},
			func(err error) bool {
				return errors.As(err, &pe) && pe.Index == 1 && errors.Is(err, pskstore.ErrDuplicateIdentity)
			}},
		{"key material stored", keys[1].Identity, []pskstore.Key{fresh[2], {Identity: []byte("other"), Secret: keys[2].Secret}},
			func(err error) bool { return errors.As(err, &pe) && pe.Rule == "R4" && pe.Index == 1 }},
		{"short key", keys[1].Identity, []pskstore.Key{{Identity: []byte("short"), Secret: fresh[2].Secret[:15]}},
			func(err error) bool { return errors.As(err, &pe) && pe.Rule == "R1" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Replace(ctx, tt.id, tt.keys)
			if !tt.ok(err) {
				t.Fatalf("Replace: %v", err)
			}
			if strings.Contains(err.Error(), hex.EncodeToString(keys[2].Secret)) {
				t.Errorf("error shows a key: %v", err)
			}
			if _, err := s.Lookup(ctx, keys[1].Identity); err != nil {
				t.Errorf("a refused Replace removed the identity: %v", err)
			}
			if _, err := s.Lookup(ctx, fresh[2].Identity); !errors.Is(err, pskstore.ErrUnknownIdentity) {
				t.Errorf("a refused Replace stored a key: %v", err)
			}
		})
	}
	expectNoChange(t, ch, 200*time.Millisecond)
}

// TestPlaintextIdentities lists the keys a Rekey would seal.
func TestPlaintextIdentities(t *testing.T) {
	d := newDB(t)
	plain := d.open(t, appName(t, "p"))
	keys := newKeys(t, "device", 2)
	if err := plain.PutMany(ctxT(t), keys, nil); err != nil {
		t.Fatal(err)
	}
	sealedStore := d.open(t, appName(t, "s"), withKEK(testKEK(t)), WithInsecurePlaintextKeys(true))
	if err := sealedStore.Put(ctxT(t), pskstoretest.NewKey(t, []byte("device-sealed"))); err != nil {
		t.Fatal(err)
	}
	ids, err := sealedStore.PlaintextIdentities(ctxT(t))
	if err != nil || len(ids) != 2 || !bytes.Equal(ids[0], keys[0].Identity) || !bytes.Equal(ids[1], keys[1].Identity) {
		t.Fatalf("PlaintextIdentities = %q, %v", ids, err)
	}
}
