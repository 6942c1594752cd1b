package pskstore

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestNotifierR10 checks that every watcher sees every change in order, even
// one that reads late, and that a watcher's channel closes with its context.
func TestNotifierR10(t *testing.T) {
	var n Notifier
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fast, err := n.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := n.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const total = 1000
	go func() {
		for i := range total {
			n.Notify(Change{Kind: Revoked, Identity: fmt.Appendf(nil, "dev-%d", i)})
		}
	}()
	read := func(ch <-chan Change) {
		t.Helper()
		for i := range total {
			select {
			case c := <-ch:
				if want := fmt.Sprintf("dev-%d", i); string(c.Identity) != want || c.Kind != Revoked {
					t.Fatalf("change %d = %v %q, want revoked %q", i, c.Kind, c.Identity, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("change %d not delivered", i)
			}
		}
	}
	read(fast)
	time.Sleep(10 * time.Millisecond) // the slow watcher's backlog is queued
	read(slow)

	cancel()
	for _, ch := range []<-chan Change{fast, slow} {
		select {
		case _, ok := <-ch:
			if ok {
				t.Error("change after cancel")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("channel not closed after cancel")
		}
	}
	n.Notify(Change{Kind: Added, Identity: []byte("after")}) // no watcher left: must not block
	if _, err := n.Watch(ctx); err == nil {
		t.Error("Watch on a done context succeeded")
	}
}

func TestNotifierCopiesIdentity(t *testing.T) {
	var n Notifier
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, _ := n.Watch(ctx)
	b, _ := n.Watch(ctx)
	id := []byte("device")
	n.Notify(Change{Kind: Rotated, Identity: id})
	id[0] = 'X'
	ca, cb := <-a, <-b
	ca.Identity[1] = 'Y'
	if string(cb.Identity) != "device" {
		t.Errorf("watchers share identity memory with each other or the caller: %q", cb.Identity)
	}
}
