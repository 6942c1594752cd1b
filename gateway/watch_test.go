package gateway

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore/memory"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestR10RevocationThroughStoreWatch: deleting an identity from a store that
// implements pskstore.Watcher closes its live session within 2 s; rotating
// another identity's key closes that session too; a third is untouched.
func TestR10RevocationThroughStoreWatch(t *testing.T) {
	backend := newEchoBackend(t)
	a, b, c := testKey("revoked", 1), testKey("rotated", 2), testKey("untouched", 3)
	store, err := memory.New(a, b, c)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, Config{Store: store, Backends: map[string]string{"dm": backend.pc.LocalAddr().String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca := (client{id: a.Identity, key: a.Secret}).mustDial(t, addr)
	cb := (client{id: b.Identity, key: b.Secret}).mustDial(t, addr)
	cc := (client{id: c.Identity, key: c.Secret}).mustDial(t, addr)
	roundTrip(t, ca, []byte("before"))

	start := time.Now()
	store.Delete(a.Identity)
	rotated := testKey("rotated", 9)
	if err := store.Put(rotated); err != nil {
		t.Fatal(err)
	}
	for name, conn := range map[string]interface {
		Read([]byte) (int, error)
		SetReadDeadline(time.Time) error
	}{"revoked": ca, "rotated": cb} {
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Read(make([]byte, 100)); err == nil {
			t.Fatalf("%s session still open", name)
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("revocation took %s", took)
	}
	roundTrip(t, cc, []byte("still here"))
	if _, err := (client{id: a.Identity, key: a.Secret}).dial(ctx, addr); err == nil {
		t.Fatal("revoked identity can still connect")
	}
	conn, err := (client{id: rotated.Identity, key: rotated.Secret}).dial(ctx, addr)
	if err != nil {
		t.Fatalf("rotated key refused: %v", err)
	}
	conn.Close()
}

// TestR9IdentitiesInLogs: logs carry the keyed tag only, unless the operator
// opts into clear identities.
func TestR9IdentitiesInLogs(t *testing.T) {
	for _, clear := range []bool{false, true} {
		t.Run(map[bool]string{false: "tag only", true: "clear opt-in"}[clear], func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			backend := newEchoBackend(t)
			k := testKey("very-private-identity", 1)
			_, addr := startServer(t, Config{Store: newMapStore(k), Backends: map[string]string{"dm": backend.pc.LocalAddr().String()},
				Logger: zap.New(core), LogIdentities: clear})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := (client{id: k.Identity, key: k.Secret}).dial(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, conn, []byte("x"))
			conn.Close()
			waitFor(t, func() bool { return logs.FilterMessage("session established").Len() == 1 }, "established log")
			var all strings.Builder
			for _, e := range logs.All() {
				all.WriteString(e.Message)
				for _, f := range e.Context {
					all.WriteString(" " + f.Key + "=" + f.String)
					if f.Interface != nil {
						if b, ok := f.Interface.([]byte); ok {
							all.Write(b)
						}
					}
				}
				all.WriteString("\n")
			}
			text := all.String()
			if bytes.Contains([]byte(text), k.Secret) {
				t.Fatal("a key reached the logs")
			}
			if got := strings.Contains(text, "very-private-identity"); got != clear {
				t.Fatalf("raw identity in logs: %v, want %v\n%s", got, clear, text)
			}
			if !strings.Contains(text, "identity_tag=id:") {
				t.Fatalf("no identity tag in logs:\n%s", text)
			}
		})
	}
}
