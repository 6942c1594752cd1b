package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/pskstoretest"
)

// within is how fast a change must reach another replica (R10).
const within = 2 * time.Second

// TestWatchReplicas: a Put, Rotate and Delete on one replica reach the
// watchers of another replica, and of the writer itself, within 2s (R10).
func TestWatchReplicas(t *testing.T) {
	d := newDB(t)
	writer := d.open(t, appName(t, "writer"))
	reader := d.open(t, appName(t, "reader"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	remote, err := reader.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	local, err := writer.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}

	k := pskstoretest.NewKey(t, []byte("device-r10"))
	if err := writer.Put(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := writer.Rotate(ctx, k.Identity, pskstoretest.NewKey(t, nil).Secret); err != nil {
		t.Fatal(err)
	}
	if err := writer.Delete(ctx, k.Identity); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	for name, ch := range map[string]<-chan pskstore.Change{"other replica": remote, "same replica": local} {
		t.Run(name, func(t *testing.T) {
			expectChange(t, ch, within, pskstore.Added, k.Identity)
			expectChange(t, ch, within, pskstore.Rotated, k.Identity)
			expectChange(t, ch, within, pskstore.Revoked, k.Identity)
		})
	}

	// A revocation made by hand in psql reaches the gateways too.
	h := pskstoretest.NewKey(t, []byte{0x00, 0xff, 'h'})
	if err := writer.Put(ctx, h); err != nil {
		t.Fatal(err)
	}
	expectChange(t, remote, within, pskstore.Added, h.Identity)
	if _, err := admin(t).Exec(ctx, `DELETE FROM `+d.schema+`.psk_keys WHERE identity = $1`, h.Identity); err != nil {
		t.Fatal(err)
	}
	expectChange(t, remote, within, pskstore.Revoked, h.Identity)
	// A binding change by hand is a rotation; an unchanged update is nothing.
	g := pskstoretest.NewKey(t, []byte("device-bind"))
	if err := writer.Put(ctx, g); err != nil {
		t.Fatal(err)
	}
	expectChange(t, remote, within, pskstore.Added, g.Identity)
	if _, err := admin(t).Exec(ctx, `UPDATE `+d.schema+`.psk_keys SET updated_at = now()`); err != nil {
		t.Fatal(err)
	}
	if _, err := admin(t).Exec(ctx, `UPDATE `+d.schema+`.psk_keys SET server_name = 'other.example' WHERE identity = $1`, g.Identity); err != nil {
		t.Fatal(err)
	}
	expectChange(t, remote, within, pskstore.Rotated, g.Identity)
	// TRUNCATE would revoke silently: refused.
	if _, err := admin(t).Exec(ctx, `TRUNCATE `+d.schema+`.psk_keys`); err == nil {
		t.Error("TRUNCATE psk_keys succeeded")
	}

	// PutMany publishes nothing; the next single change still arrives.
	if err := writer.PutMany(ctx, newKeys(t, "bulk", 100), nil); err != nil {
		t.Fatal(err)
	}
	last := pskstoretest.NewKey(t, []byte("device-last"))
	if err := writer.Put(ctx, last); err != nil {
		t.Fatal(err)
	}
	expectChange(t, remote, within, pskstore.Added, last.Identity)
	expectNoChange(t, remote, 100*time.Millisecond)
}

// TestWatchReconnects: the listener's connection is terminated; it
// reconnects on its own and later changes still arrive. A listener idle
// past its poll interval pings and keeps its connection.
func TestWatchReconnects(t *testing.T) {
	d := newDB(t)
	app := appName(t, "watch")
	watcher := d.open(t, app)
	watcher.pollEvery = 100 * time.Millisecond
	writer := d.open(t, appName(t, "writer"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := watcher.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(350 * time.Millisecond) // a few polls
	k := pskstoretest.NewKey(t, []byte("device-1"))
	if err := writer.Put(ctx, k); err != nil {
		t.Fatal(err)
	}
	expectChange(t, ch, within, pskstore.Added, k.Identity)

	for i := range 2 {
		if n := terminate(t, app+" listener"); n != 1 {
			t.Fatalf("terminated %d listener connections, want 1", n)
		}
		k := pskstoretest.NewKey(t, []byte{'d', byte('0' + i)})
		// The change is committed before or after the listener is back:
		// either way it is reported, once.
		if err := writer.Put(ctx, k); err != nil {
			t.Fatal(err)
		}
		expectChange(t, ch, 5*time.Second, pskstore.Added, k.Identity)
	}
	expectNoChange(t, ch, 200*time.Millisecond)
}

// TestWatchReplaysOutage: changes committed while the listener cannot reach
// PostgreSQL are reported after it reconnects.
func TestWatchReplaysOutage(t *testing.T) {
	d := newDB(t)
	p := newProxy(t, d)
	watcher := openDSN(t, d.dsnVia(p.addr, appName(t, "watch")))
	writer := d.open(t, appName(t, "writer"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys := newKeys(t, "device", 4)
	for _, k := range keys[:2] {
		if err := writer.Put(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := watcher.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A transaction that draws its change id before the outage and
	// commits during it, after a later change was seen.
	slow, err := admin(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx)
	if _, err := slow.Exec(ctx, `DELETE FROM `+d.schema+`.psk_keys WHERE identity = $1`, keys[1].Identity); err != nil {
		t.Fatal(err)
	}
	if err := writer.Put(ctx, keys[2]); err != nil {
		t.Fatal(err)
	}
	expectChange(t, ch, within, pskstore.Added, keys[2].Identity)

	p.down()
	if err := writer.Delete(ctx, keys[0].Identity); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := writer.Put(ctx, keys[3]); err != nil {
		t.Fatal(err)
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	expectNoChange(t, ch, 300*time.Millisecond)
	p.up()
	// Replayed in change id order: the slow transaction's first.
	expectChange(t, ch, 15*time.Second, pskstore.Revoked, keys[1].Identity)
	expectChange(t, ch, within, pskstore.Revoked, keys[0].Identity)
	expectChange(t, ch, within, pskstore.Added, keys[3].Identity)
	expectNoChange(t, ch, 200*time.Millisecond)
}
