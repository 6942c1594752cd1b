package file

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/pskstoretest"
)

// watched opens path, starts WatchFile and Watch, and returns the store, its
// change channel and the observed logs.
func watched(t *testing.T, path string) (*Store, <-chan pskstore.Change, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	s, err := Open(path, WithDebounce(20*time.Millisecond), WithLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := s.WatchFile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s, ch, logs
}

func expectChange(t *testing.T, ch <-chan pskstore.Change, kind pskstore.ChangeKind, id string) {
	t.Helper()
	select {
	case c := <-ch:
		if c.Kind != kind || string(c.Identity) != id {
			t.Fatalf("change %v %q, want %v %q", c.Kind, c.Identity, kind, id)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no %v %q change within 5s", kind, id)
	}
}

// expectQuiet checks that nothing was reported since the last
// expectChange: it adds a marker identity to the file at path (keeping
// keep), and the next change must be the marker's.
func expectQuiet(t *testing.T, ch <-chan pskstore.Change, path string, keep ...pskstore.Key) {
	t.Helper()
	marker := pskstoretest.NewKey(t, []byte("marker"))
	if err := Save(path, append(keep, marker)); err != nil {
		t.Fatal(err)
	}
	expectChange(t, ch, pskstore.Added, "marker")
}

// waitLogs waits until logs holds more than n entries with message msg.
func waitLogs(t *testing.T, logs *observer.ObservedLogs, msg string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterMessage(msg).Len() <= n {
		if time.Now().After(deadline) {
			t.Fatalf("no %q logged within 5s", msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWatchFileRenameReplaceR10: editors and Save write a new file and
// rename it over the old one; the watch must follow the new inode.
func TestWatchFileRenameReplaceR10(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	a := pskstoretest.NewKey(t, []byte("a"))
	if err := Save(path, []pskstore.Key{a}); err != nil {
		t.Fatal(err)
	}
	s, ch, _ := watched(t, path)
	b := pskstoretest.NewKey(t, []byte("b"))
	if err := Save(path, []pskstore.Key{a, b}); err != nil {
		t.Fatal(err)
	}
	expectChange(t, ch, pskstore.Added, "b")
	if err := Save(path, []pskstore.Key{b}); err != nil { // a second rename on the new inode
		t.Fatal(err)
	}
	expectChange(t, ch, pskstore.Revoked, "a")
	if _, err := s.Lookup(context.Background(), []byte("a")); err == nil {
		t.Error("revoked identity still found")
	}
	expectQuiet(t, ch, path, b)
}

// TestWatchFileInPlaceWriteR10: a plain truncate-and-write; the transient
// empty file must not revoke anything.
func TestWatchFileInPlaceWriteR10(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	a := pskstoretest.NewKey(t, []byte("a"))
	if err := Save(path, []pskstore.Key{a}); err != nil {
		t.Fatal(err)
	}
	_, ch, logs := watched(t, path)
	a2 := pskstoretest.NewKey(t, []byte("a"))
	data, err := Marshal([]pskstore.Key{a2})
	if err != nil {
		t.Fatal(err)
	}
	const checked = "psk store: key file checked"
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitLogs(t, logs, checked, 0) // a reload saw the empty file
	f.Write(data[:len(data)/2])
	waitLogs(t, logs, checked, 1) // and the half-written one
	f.Write(data[len(data)/2:])
	f.Close()
	expectChange(t, ch, pskstore.Rotated, "a")
	waitLogs(t, logs, "psk store: key file recovered: it loads again", 0)
	expectQuiet(t, ch, path, a2)
}

// TestWatchFileBrokenEditKeepsKeys: a broken file is logged with its line
// and the last good keys keep serving; fixing the file applies it.
func TestWatchFileBrokenEditKeepsKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	a := pskstoretest.NewKey(t, []byte("a"))
	if err := Save(path, []pskstore.Key{a}); err != nil {
		t.Fatal(err)
	}
	s, ch, logs := watched(t, path)
	copyFile(t, "testdata/short-key.yaml", path)
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterMessageSnippet("reload failed").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no reload failure logged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	entry := logs.FilterMessageSnippet("reload failed").All()[0]
	if err := entry.ContextMap()["err"]; !strings.Contains(err.(string), ":5: keys[1].key_hex: policy R1") {
		t.Errorf("logged error %q does not name line, entry and field", err)
	}
	if _, err := s.Lookup(context.Background(), []byte("a")); err != nil {
		t.Fatalf("last good key lost: %v", err)
	}
	// The broken file reported nothing: the first change is the fix's.
	copyFile(t, "testdata/good.yaml", path)
	expectChange(t, ch, pskstore.Revoked, "a")
	waitLogs(t, logs, "psk store: key file recovered: it loads again", 0)
	for _, e := range logs.All() {
		for _, v := range e.ContextMap() {
			if s, ok := v.(string); ok && strings.Contains(s, "device-0001") {
				t.Errorf("log %q shows a raw identity (R9)", e.Message)
			}
		}
	}
}

// TestWatchFileConfigMapSwapR10 reproduces a Kubernetes ConfigMap volume:
// keys.yaml -> ..data/keys.yaml, ..data -> ..<timestamp>; an update writes a
// new timestamped directory and renames a new ..data link over the old one.
func TestWatchFileConfigMapSwapR10(t *testing.T) {
	dir := t.TempDir()
	a := pskstoretest.NewKey(t, []byte("a"))
	writeVersion := func(name string, keys ...pskstore.Key) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := Save(filepath.Join(dir, name, "keys.yaml"), keys); err != nil {
			t.Fatal(err)
		}
	}
	writeVersion("..2025_01_01_00_00_00.1")
	must(t, os.Symlink("..2025_01_01_00_00_00.1", filepath.Join(dir, "..data")))
	must(t, os.Symlink("..data/keys.yaml", filepath.Join(dir, "keys.yaml")))
	_, ch, _ := watched(t, filepath.Join(dir, "keys.yaml"))

	swap := func(name string, keys ...pskstore.Key) {
		t.Helper()
		writeVersion(name, keys...)
		must(t, os.Symlink(name, filepath.Join(dir, "..data_tmp")))
		must(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	}
	swap("..2025_01_01_00_01_00.2", a)
	expectChange(t, ch, pskstore.Added, "a")
	must(t, os.RemoveAll(filepath.Join(dir, "..2025_01_01_00_00_00.1")))
	swap("..2025_01_01_00_02_00.3")
	expectChange(t, ch, pskstore.Revoked, "a")
	must(t, os.RemoveAll(filepath.Join(dir, "..2025_01_01_00_01_00.2")))
	// Removing the old version reported nothing: the next change is the
	// marker of the next update.
	swap("..2025_01_01_00_03_00.4", pskstoretest.NewKey(t, []byte("marker")))
	expectChange(t, ch, pskstore.Added, "marker")
}

// TestWatchFileSymlinkElsewhereR10: the key file is a link into another
// directory; edits of the target are seen.
func TestWatchFileSymlinkElsewhereR10(t *testing.T) {
	link, target := filepath.Join(t.TempDir(), "keys.yaml"), filepath.Join(t.TempDir(), "real.yaml")
	if err := Save(target, nil); err != nil {
		t.Fatal(err)
	}
	must(t, os.Symlink(target, link))
	_, ch, _ := watched(t, link)
	if err := Save(target, []pskstore.Key{pskstoretest.NewKey(t, []byte("a"))}); err != nil {
		t.Fatal(err)
	}
	expectChange(t, ch, pskstore.Added, "a")
}

func TestWatchFileStopsWithContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	if err := Save(path, nil); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	s, err := Open(path, WithDebounce(10*time.Millisecond), WithLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.WatchFile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	waitLogs(t, logs, "psk store: file watch stopped", 0)
	if err := Save(path, []pskstore.Key{pskstoretest.NewKey(t, []byte("a"))}); err != nil {
		t.Fatal(err)
	}
	// The watch has stopped: nothing can reload the store any more.
	if len(allKeys(t, s)) != 0 || logs.FilterMessage("psk store: key file checked").Len() != 0 {
		t.Error("store reloaded after the watch context was canceled")
	}
	if err := s.WatchFile(context.Background(), nil); err != nil {
		t.Fatal(err) // watching again after a stop works
	}
	_ = s.Reload()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
