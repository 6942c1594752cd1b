package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/pskstoretest"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

func testKEK(t testing.TB) *sealed.KEK {
	t.Helper()
	for {
		m := make([]byte, sealed.KEKSize)
		rand.Read(m)
		if k, err := sealed.NewKEK(m); err == nil {
			return k
		}
	}
}

func withKEK(kek *sealed.KEK) Option { return WithKEK(kek) }

// storedRow is a psk_keys row as the database holds it.
type storedRow struct{ key, kekID []byte }

func rawRows(t *testing.T, d *db) map[string]storedRow {
	t.Helper()
	rows, err := admin(t).Query(ctxT(t), `SELECT identity, key, kek_id FROM `+d.schema+`.psk_keys`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := make(map[string]storedRow)
	for rows.Next() {
		var id []byte
		var r storedRow
		if err := rows.Scan(&id, &r.key, &r.kekID); err != nil {
			t.Fatal(err)
		}
		out[string(id)] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkNoKeyIn fails if s shows any of keys, in hex, base64 or raw.
func checkNoKeyIn(t *testing.T, s string, keys ...pskstore.Key) {
	t.Helper()
	for _, k := range keys {
		for _, form := range []string{hex.EncodeToString(k.Secret), base64.StdEncoding.EncodeToString(k.Secret), string(k.Secret)} {
			if strings.Contains(s, form) {
				t.Fatalf("%q shows a key (R9)", s)
			}
		}
	}
}

func TestConformanceSealed(t *testing.T) {
	kek := testKEK(t)
	pskstoretest.Run(t, func(t *testing.T, keys []pskstore.Key) pskstore.Store {
		s := newDB(t).open(t, appName(t, "conf"), withKEK(kek))
		if err := s.PutMany(ctxT(t), keys, nil); err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestSealedAtRest: with a KEK every write (Put, PutMany, Rotate) stores
// the key sealed under it, with the identity as associated data, and the
// database holds no key in any form; lookups open them.
func TestSealedAtRest(t *testing.T) {
	kek := testKEK(t)
	d := newDB(t)
	s := d.open(t, appName(t, "sealed"), withKEK(kek))
	ctx := ctxT(t)
	one := pskstoretest.NewKey(t, []byte("device-put"))
	many := newKeys(t, "bulk", 3)
	if err := s.Put(ctx, one); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMany(ctx, many, nil); err != nil {
		t.Fatal(err)
	}
	rotated := pskstoretest.NewKey(t, nil).Secret
	if err := s.Rotate(ctx, many[2].Identity, rotated); err != nil {
		t.Fatal(err)
	}
	many[2].Secret = rotated
	all := append([]pskstore.Key{one}, many...)

	rows := rawRows(t, d)
	if len(rows) != len(all) {
		t.Fatalf("%d rows, want %d", len(rows), len(all))
	}
	for _, k := range all {
		r := rows[string(k.Identity)]
		if hex.EncodeToString(r.kekID) != kek.ID() {
			t.Errorf("%s: kek_id %x, want %s", k.Identity, r.kekID, kek.ID())
		}
		if id, err := sealed.KEKID(r.key); err != nil || id != kek.ID() {
			t.Errorf("%s: stored key is not sealed under the kek: %v", k.Identity, err)
		}
		if bytes.Contains(r.key, k.Secret) {
			t.Errorf("%s: the stored value contains the key", k.Identity)
		}
		if got, err := kek.Open(k.Identity, r.key); err != nil || !bytes.Equal(got, k.Secret) {
			t.Errorf("%s: the stored value does not open to the key: %v", k.Identity, err)
		}
		if _, err := kek.Open([]byte("another identity"), r.key); !errors.Is(err, sealed.ErrCorrupt) {
			t.Errorf("%s: the sealed key opens for another identity: %v", k.Identity, err)
		}
		got, err := s.Lookup(ctx, k.Identity)
		if err != nil || !bytes.Equal(got.Secret, k.Secret) {
			t.Errorf("Lookup %s: %v", k.Identity, err)
		}
	}
	dump, err := admin(t).Query(ctx, `SELECT t::text FROM `+d.schema+`.psk_keys t`)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for dump.Next() {
		var line string
		if err := dump.Scan(&line); err != nil {
			t.Fatal(err)
		}
		text.WriteString(line)
	}
	dump.Close()
	checkNoKeyIn(t, strings.ReplaceAll(text.String(), `\x`, ""), all...)

	// Rotating to the same key seals it again (a fresh nonce) and still
	// changes nothing: no Rotated, so no session closes (R10).
	ch, err := s.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Rotate(ctx, one.Identity, one.Secret); err != nil {
		t.Fatal(err)
	}
	expectNoChange(t, ch, 300*time.Millisecond)
}

// TestSealingRefusals mirrors the file store: with a KEK a plaintext key is
// refused unless InsecurePlaintextKeys; without one a sealed key is
// refused; a key sealed under another KEK is refused naming both KEK ids.
// Open refuses to start on such a store and Lookup refuses such a key
// written later, both naming the identity by tag, never the key.
func TestSealingRefusals(t *testing.T) {
	kek, other := testKEK(t), testKEK(t)
	ctx := ctxT(t)
	plain := pskstoretest.NewKey(t, []byte("device-plain"))
	seal := pskstoretest.NewKey(t, []byte("device-sealed"))

	t.Run("open", func(t *testing.T) {
		plainDB, sealedDB := newDB(t), newDB(t)
		if err := plainDB.open(t, appName(t, "w")).Put(ctx, plain); err != nil {
			t.Fatal(err)
		}
		if err := sealedDB.open(t, appName(t, "w"), withKEK(kek)).Put(ctx, seal); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name string
			d    *db
			cfg  Option
			key  pskstore.Key
			want []error
			msg  []string
		}{
			{"plaintext key with a kek", plainDB, withKEK(kek), plain, []error{ErrPlaintextKey}, []string{"plaintext key", "gateway psk rekey"}},
			{"sealed key without a kek", sealedDB, nil, seal, []error{ErrNoKEK}, []string{"sealed key and no key-encryption key"}},
			{"sealed key under another kek", sealedDB, withKEK(other), seal, []error{sealed.ErrWrongKEK},
				[]string{"sealed under kek " + kek.ID(), "the configured kek is " + other.ID()}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				opts := []Option{WithPolicy(pskstore.Options{Tagger: testTagger})}
				if tt.cfg != nil {
					opts = append(opts, tt.cfg)
				}
				s, err := Open(ctx, tt.d.dsn(t, appName(t, "r")), opts...)
				if err == nil {
					s.Close()
					t.Fatal("Open succeeded")
				}
				var ke *KeyError
				if !errors.As(err, &ke) || ke.Tag != testTagger.Tag(tt.key.Identity) {
					t.Errorf("Open: %v, want a *KeyError naming %s", err, testTagger.Tag(tt.key.Identity))
				}
				for _, w := range tt.want {
					if !errors.Is(err, w) {
						t.Errorf("Open: %v, want %v", err, w)
					}
				}
				for _, m := range append(tt.msg, testTagger.Tag(tt.key.Identity)) {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("Open: %q does not say %q", err, m)
					}
				}
				if strings.Contains(err.Error(), string(tt.key.Identity)) {
					t.Errorf("Open: %q shows the identity (R9)", err)
				}
				checkNoKeyIn(t, err.Error(), tt.key)
			})
		}
		// A migration: plaintext keys accepted with InsecurePlaintextKeys;
		// new keys are sealed all the same.
		s := plainDB.open(t, appName(t, "mig"), withKEK(kek), WithInsecurePlaintextKeys(true))
		if got, err := s.Lookup(ctx, plain.Identity); err != nil || !bytes.Equal(got.Secret, plain.Secret) {
			t.Fatalf("Lookup of a plaintext key with InsecurePlaintextKeys: %v", err)
		}
		fresh := pskstoretest.NewKey(t, []byte("device-new"))
		if err := s.Put(ctx, fresh); err != nil {
			t.Fatal(err)
		}
		if r := rawRows(t, plainDB)[string(fresh.Identity)]; hex.EncodeToString(r.kekID) != kek.ID() {
			t.Error("a key written with InsecurePlaintextKeys is not sealed")
		}
	})

	t.Run("lookup", func(t *testing.T) {
		// Keys written after Open by replicas configured otherwise.
		d := newDB(t)
		s := d.open(t, appName(t, "r"), withKEK(kek))
		writers := map[string]*Store{"plaintext": d.open(t, appName(t, "w")), "other kek": d.open(t, appName(t, "w"), withKEK(other))}
		want := map[string]error{"plaintext": ErrPlaintextKey, "other kek": sealed.ErrWrongKEK}
		for name, w := range writers {
			k := pskstoretest.NewKey(t, []byte("device-"+strings.ReplaceAll(name, " ", "-")))
			if err := w.Put(ctx, k); err != nil {
				t.Fatal(err)
			}
			_, err := s.Lookup(ctx, k.Identity)
			var ke *KeyError
			if !errors.Is(err, pskstore.ErrUnavailable) || !errors.Is(err, want[name]) || !errors.As(err, &ke) || ke.Tag != testTagger.Tag(k.Identity) {
				t.Errorf("%s: Lookup: %v, want ErrUnavailable and %v naming %s", name, err, want[name], testTagger.Tag(k.Identity))
			}
			if errors.Is(err, pskstore.ErrUnknownIdentity) {
				t.Errorf("%s: a key that does not open reported as unknown", name)
			}
			checkNoKeyIn(t, err.Error(), k)
			if _, err := s.Keys(ctx); !errors.Is(err, want[name]) {
				t.Errorf("%s: Keys: %v, want %v", name, err, want[name])
			}
			if err := s.Delete(ctx, k.Identity); err != nil {
				t.Fatal(err)
			}
		}
		// A sealed key moved to another identity by hand does not open.
		a, b := pskstoretest.NewKey(t, []byte("device-a")), pskstoretest.NewKey(t, []byte("device-b"))
		for _, k := range []pskstore.Key{a, b} {
			if err := s.Put(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := admin(t).Exec(ctx, `UPDATE `+d.schema+`.psk_keys SET key = (SELECT key FROM `+d.schema+`.psk_keys WHERE identity = $1) WHERE identity = $2`,
			a.Identity, b.Identity); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lookup(ctx, b.Identity); !errors.Is(err, sealed.ErrCorrupt) || !strings.Contains(err.Error(), testTagger.Tag(b.Identity)) {
			t.Errorf("Lookup of a key sealed for another identity: %v, want sealed.ErrCorrupt naming its tag", err)
		}
	})
}

// TestRekey: Rekey seals a plaintext store, then moves it to another KEK,
// in batches, in one transaction, without publishing changes; afterwards
// only the new KEK opens the store, and this Store uses it at once.
func TestRekey(t *testing.T) {
	defer func(n int) { rekeyBatch = n }(rekeyBatch)
	rekeyBatch = 7
	d := newDB(t)
	ctx := ctxT(t)
	s := d.open(t, appName(t, "rekey"))
	keys := newKeys(t, "device", 20)
	if err := s.PutMany(ctx, keys, nil); err != nil {
		t.Fatal(err)
	}
	watcher := d.open(t, appName(t, "watch"), withKEK(testKEK(t)), WithInsecurePlaintextKeys(true))
	ch, err := watcher.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kek1, kek2 := testKEK(t), testKEK(t)

	sealedUnder := func(kek *sealed.KEK) {
		t.Helper()
		for id, r := range rawRows(t, d) {
			if hex.EncodeToString(r.kekID) != kek.ID() {
				t.Fatalf("%s: kek_id %x, want %s", id, r.kekID, kek.ID())
			}
		}
		got := d.open(t, appName(t, "check"), withKEK(kek))
		for _, k := range keys {
			if g, err := got.Lookup(ctx, k.Identity); err != nil || !bytes.Equal(g.Secret, k.Secret) {
				t.Fatalf("Lookup %s under the new kek: %v", k.Identity, err)
			}
			if g, err := s.Lookup(ctx, k.Identity); err != nil || !bytes.Equal(g.Secret, k.Secret) {
				t.Fatalf("Lookup %s on the rekeyed Store: %v", k.Identity, err)
			}
		}
	}
	for i, kek := range []*sealed.KEK{kek1, kek2, kek2} { // plaintext to kek1 to kek2, and again
		found, err := s.Rekey(ctx, kek)
		if err != nil || found.Keys != len(keys) {
			t.Fatalf("Rekey %d = %+v, %v; want %d keys", i, found, err, len(keys))
		}
		if want := [...]string{"20 plaintext", "20 sealed under kek " + kek1.ID(), "20 sealed under kek " + kek2.ID()}[i]; found.Found() != want {
			t.Errorf("Rekey %d found %q, want %q", i, found.Found(), want)
		}
		sealedUnder(kek)
	}
	expectNoChange(t, ch, 300*time.Millisecond) // no session closes
	kekIDs, err := s.KEKs(ctx)
	if err != nil || len(kekIDs) != 1 || kekIDs[kek2.ID()] != int64(len(keys)) {
		t.Errorf("KEKs = %v, %v", kekIDs, err)
	}
	_, err = Open(ctx, d.dsn(t, "old"), WithKEK(kek1))
	if !errors.Is(err, sealed.ErrWrongKEK) {
		t.Errorf("Open with the old kek after Rekey: %v, want ErrWrongKEK", err)
	}
	// New writes are sealed under the new KEK.
	fresh := pskstoretest.NewKey(t, []byte("device-new"))
	if err := s.Put(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	if r := rawRows(t, d)[string(fresh.Identity)]; hex.EncodeToString(r.kekID) != kek2.ID() {
		t.Error("Put after Rekey does not seal under the new kek")
	}
	expectChange(t, ch, within, pskstore.Added, fresh.Identity)

	// A key that does not open fails the whole Rekey, which changes nothing.
	t.Run("all or nothing", func(t *testing.T) {
		foreign := d.open(t, appName(t, "w"), withKEK(kek2))
		foreign.kek.Store(testKEK(t)) // a replica configured with another KEK
		bad := pskstoretest.NewKey(t, []byte("device-zz-foreign"))
		if err := foreign.Put(ctx, bad); err != nil {
			t.Fatal(err)
		}
		before := rawRows(t, d)
		_, err := s.Rekey(ctx, kek1)
		var ke *KeyError
		if !errors.Is(err, sealed.ErrWrongKEK) || !errors.As(err, &ke) || ke.Tag != testTagger.Tag(bad.Identity) {
			t.Fatalf("Rekey over a key of another kek: %v", err)
		}
		if !strings.Contains(err.Error(), "nothing re-sealed") {
			t.Errorf("Rekey error %q does not say nothing changed", err)
		}
		after := rawRows(t, d)
		for id, r := range before {
			if !bytes.Equal(after[id].key, r.key) {
				t.Fatalf("%s changed by a failed Rekey", id)
			}
		}
		if g, err := s.Lookup(ctx, keys[0].Identity); err != nil || !bytes.Equal(g.Secret, keys[0].Secret) {
			t.Fatalf("the Store lost its kek after a failed Rekey: %v", err)
		}
		if err := s.Delete(ctx, bad.Identity); err != nil {
			t.Fatal(err)
		}
		// Key material that no longer matches its fingerprint (R4).
		if _, err := admin(t).Exec(ctx, `UPDATE `+d.schema+`.psk_keys SET fingerprint = $1 WHERE identity = $2`,
			bytes.Repeat([]byte{7}, 32), keys[3].Identity); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Rekey(ctx, kek1); !errors.Is(err, ErrCorruptRow) || !strings.Contains(err.Error(), testTagger.Tag(keys[3].Identity)) {
			t.Errorf("Rekey over a key that does not match its fingerprint: %v", err)
		}
	})
	if _, err := s.Rekey(ctx, nil); err == nil {
		t.Error("Rekey to no kek succeeded")
	}
}

// TestRekeyBlocksWriters: writes wait for a Rekey in progress, so none
// commits between its read and its update of a key.
func TestRekeyBlocksWriters(t *testing.T) {
	d := newDB(t)
	ctx := ctxT(t)
	kek1, kek2 := testKEK(t), testKEK(t)
	app := appName(t, "rekey")
	s := d.open(t, app, withKEK(kek1))
	other := d.open(t, appName(t, "w"), withKEK(kek1))
	keys := newKeys(t, "device", 10)
	if err := s.PutMany(ctx, keys, nil); err != nil {
		t.Fatal(err)
	}
	// A transaction touching a row holds Rekey at its table lock.
	tx, err := admin(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE `+d.schema+`.psk_keys SET updated_at = now() WHERE identity = $1`, keys[0].Identity); err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int
		err error
	}
	rekeyed := make(chan result, 1)
	go func() {
		found, err := s.Rekey(context.Background(), kek2)
		rekeyed <- result{found.Keys, err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for waiting := false; !waiting; {
		if time.Now().After(deadline) {
			t.Fatal("Rekey never waited for the table lock")
		}
		if err := admin(t).QueryRow(ctx, `SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	late := pskstoretest.NewKey(t, []byte("device-late"))
	put := make(chan error, 1)
	go func() { put <- other.Put(context.Background(), late) }()
	select {
	case err := <-put:
		t.Fatalf("Put did not wait for the Rekey: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-rekeyed
	if r.err != nil || r.n != len(keys) {
		t.Fatalf("Rekey = %d, %v; want %d", r.n, r.err, len(keys))
	}
	if err := <-put; err != nil {
		t.Fatal(err)
	}
	// The late key committed after the Rekey, under its writer's KEK.
	for id, row := range rawRows(t, d) {
		want := kek2
		if id == string(late.Identity) {
			want = kek1
		}
		if hex.EncodeToString(row.kekID) != want.ID() {
			t.Errorf("%s under kek %x, want %s", id, row.kekID, want.ID())
		}
	}
}

// TestUpgradeToSealedKeys: a store created by a gateway that knew only
// 0001_init keeps its (plaintext) keys when 0002_sealed_keys is applied,
// and Rekey seals them.
func TestUpgradeToSealedKeys(t *testing.T) {
	d := newDB(t)
	ctx := ctxT(t)
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	c := admin(t)
	if _, err := c.Exec(ctx, `SET search_path = `+d.schema); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, ms[0].sql); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `CREATE TABLE psk_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO psk_schema_migrations (version, name) VALUES (1, '0001_init')`); err != nil {
		t.Fatal(err)
	}
	// A key as 0001 wrote it: plaintext, no kek_id.
	secret := bytes.Repeat([]byte{0x3c}, 32)
	k := pskstoretest.NewKey(t, []byte("device-old"))
	fp := pskstore.NewFingerprinter(secret).Fingerprint(k.Secret)
	if _, err := c.Exec(ctx, `INSERT INTO psk_keys (identity, key, fingerprint, hash, versions, modes) VALUES ($1, $2, $3, 'sha256', 3, 1)`,
		k.Identity, []byte(k.Secret), fp[:]); err != nil {
		t.Fatal(err)
	}
	fk := WithFingerprintKey(secret)
	old := d.open(t, appName(t, "old"), fk)
	var n int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM psk_schema_migrations`).Scan(&n); err != nil || n != len(ms) {
		t.Fatalf("%d migrations applied, want %d (%v)", n, len(ms), err)
	}
	if got, err := old.Lookup(ctx, k.Identity); err != nil || !bytes.Equal(got.Secret, k.Secret) {
		t.Fatalf("Lookup of a key written before 0002: %v", err)
	}
	kek := testKEK(t)
	if found, err := old.Rekey(ctx, kek); err != nil || found.Keys != 1 || found.Plaintext != 1 {
		t.Fatalf("Rekey = %d, %v", n, err)
	}
	if got, err := d.open(t, appName(t, "new"), withKEK(kek), fk).Lookup(ctx, k.Identity); err != nil || !bytes.Equal(got.Secret, k.Secret) {
		t.Fatalf("Lookup after Rekey: %v", err)
	}
}
