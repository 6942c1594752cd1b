package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/pskstoretest"
)

func openSaved(t *testing.T, keys []pskstore.Key, opts ...Option) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.yaml")
	if err := Save(path, keys, opts...); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

// TestWriteSeesExternalEdit: a write re-reads the file first, so an edit
// made since the store loaded it is kept (and reported), not overwritten.
func TestWriteSeesExternalEdit(t *testing.T) {
	a, b, c := pskstoretest.NewKey(t, []byte("a")), pskstoretest.NewKey(t, []byte("b")), pskstoretest.NewKey(t, []byte("c"))
	s, path := openSaved(t, []pskstore.Key{a})
	ctx := context.Background()
	changes, _ := s.Watch(ctx)
	if err := Save(path, []pskstore.Key{a, b}); err != nil { // another tool's edit
		t.Fatal(err)
	}
	if err := s.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 || string(keys[1].Identity) != "b" || string(keys[2].Identity) != "c" {
		t.Fatalf("file holds %d keys after the write, want a, b, c in file order", len(keys))
	}
	for _, id := range []string{"b", "c"} {
		if got := <-changes; got.Kind != pskstore.Added || string(got.Identity) != id {
			t.Fatalf("change %v %q, want Added %q", got.Kind, got.Identity, id)
		}
	}
}

// TestConcurrentWritersLoseNothing: writers of one file, in one process or
// several, serialize on the directory lock and never lose a change.
func TestConcurrentWritersLoseNothing(t *testing.T) {
	_, path := openSaved(t, nil)
	const writers, each = 4, 5
	var wg sync.WaitGroup
	for w := range writers {
		s, err := Open(path) // a store per writer, like separate psk commands
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for i := range each {
				if err := s.Put(context.Background(), pskstoretest.NewKey(t, fmt.Appendf(nil, "w%d-%d", w, i))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Count(context.Background()); n != writers*each {
		t.Fatalf("%d keys after %d writes", n, writers*each)
	}
}

// TestWriteRefusesBrokenFile: a file that no longer loads is not written
// over; the error names its problem.
func TestWriteRefusesBrokenFile(t *testing.T) {
	s, path := openSaved(t, []pskstore.Key{pskstoretest.NewKey(t, []byte("a"))})
	copyFile(t, "testdata/short-key.yaml", path)
	before, _ := os.ReadFile(path)
	err := s.Put(context.Background(), pskstoretest.NewKey(t, []byte("b")))
	if err == nil || !strings.Contains(err.Error(), "does not load, nothing written") || !strings.Contains(err.Error(), ":5: keys[1].key_hex: policy R1") {
		t.Fatalf("Put on a broken file: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("the broken file was written over")
	}
}

// TestCreate: WithCreate opens a missing file as an empty store, which the
// first write creates with mode 0600; without it a missing file is an error.
func TestCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	if _, err := Open(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open of a missing file: %v, want ErrNotExist", err)
	}
	s, err := Open(path, WithCreate(true))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Count(context.Background()); n != 0 {
		t.Fatalf("%d keys in a new store", n)
	}
	if err := s.Put(context.Background(), pskstoretest.NewKey(t, []byte("a"))); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("created file: %v, %v", fi.Mode(), err)
	}
	if _, err := Open(path); err != nil {
		t.Fatalf("the created file does not load: %v", err)
	}
}

// TestRekeyReportsWhatItFound: plaintext entries and sealed ones are
// counted as found; afterwards every entry is sealed under the new KEK and
// the store reads and writes with it.
func TestRekeyReportsWhatItFound(t *testing.T) {
	old, next := testKEK(t), testKEK(t)
	keys := []pskstore.Key{pskstoretest.NewKey(t, []byte("a")), pskstoretest.NewKey(t, []byte("b")), pskstoretest.NewKey(t, []byte("c"))}
	s, path := openSaved(t, keys[:2], WithKEK(old))
	data, _ := os.ReadFile(path)
	plain, err := Marshal(keys[2:])
	if err != nil {
		t.Fatal(err)
	}
	mixed := string(data) + strings.TrimPrefix(string(plain), "# "+header+"\nkeys:\n")
	if err := os.WriteFile(path, []byte(mixed), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, WithKEK(old), WithInsecurePlaintextKeys(true))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ids, _ := s.PlaintextIdentities(ctx); len(ids) != 1 || string(ids[0]) != "c" {
		t.Fatalf("PlaintextIdentities = %q", ids)
	}
	found, err := s.Rekey(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	if want := "1 plaintext and 2 sealed under kek " + old.ID(); found.Keys != 3 || found.Found() != want {
		t.Errorf("Rekey found %+v (%q), want %q", found, found.Found(), want)
	}
	if ids, _ := s.PlaintextIdentities(ctx); len(ids) != 0 {
		t.Errorf("plaintext after rekey: %q", ids)
	}
	if _, err := Open(path, WithKEK(next)); err != nil {
		t.Fatalf("the rekeyed file does not load under the new kek: %v", err)
	}
	if err := s.Put(ctx, pskstoretest.NewKey(t, []byte("d"))); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, WithKEK(next)); err != nil {
		t.Fatalf("a write after rekey is not sealed under the new kek: %v", err)
	}
	found, err = s.Rekey(ctx, next) // again: nothing plaintext, all under next
	if err != nil || found.Found() != "4 sealed under kek "+next.ID() {
		t.Errorf("second Rekey found %q, %v", found.Found(), err)
	}
}

// TestCheckMode: a key file others may read is reported; the gateway's own
// group reading it (a Kubernetes Secret volume: 0440, fsGroup) is not.
func TestCheckMode(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o600, true}, {0o400, true}, {0o440, true}, {0o640, true}, {0o644, false}, {0o604, false}} {
		path := filepath.Join(dir, fmt.Sprintf("k%o", tt.mode))
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tt.mode); err != nil {
			t.Fatal(err)
		}
		err := CheckMode(path) // the file's group is this process's
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrReadable)) {
			t.Errorf("mode %04o: %v", tt.mode, err)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("%04o", tt.mode)) {
			t.Errorf("error %q does not show the mode", err)
		}
	}
	if err := CheckMode(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("missing file: %v", err)
	}
	t.Run("group of others", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("skipped: giving a file to another group needs root")
		}
		path := filepath.Join(dir, "foreign")
		if err := os.WriteFile(path, nil, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, -1, 54321); err != nil {
			t.Fatal(err)
		}
		if err := CheckMode(path); !errors.Is(err, ErrReadable) || !strings.Contains(err.Error(), "not in that group") {
			t.Errorf("group-readable by another group: %v", err)
		}
	})
}
