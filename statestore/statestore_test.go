package statestore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRegistrationFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registrations.json")
	f, err := OpenRegistrations(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := Registration{Identity: []byte("dev-a"), Endpoint: "urn:a", Location: "/rd/1", Lifetime: time.Hour, Updated: time.Unix(1700000000, 0).UTC()}
	b := Registration{Identity: []byte{0, 0xff, 7}, Endpoint: "urn:b", Location: "/rd/2", Lifetime: 30 * time.Second, Updated: time.Unix(1700000100, 0).UTC()}
	if err := f.SaveRegistrations(ctx, []Registration{a, b}, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.SaveRegistrations(ctx, nil, [][]byte{[]byte("dev-a")}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v", st.Mode(), err)
	}
	g, err := OpenRegistrations(path)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := g.LoadRegistrations(ctx)
	if len(got) != 1 || !bytes.Equal(got[0].Identity, b.Identity) || got[0].Location != "/rd/2" ||
		got[0].Lifetime != b.Lifetime || !got[0].Updated.Equal(b.Updated) || got[0].Endpoint != "urn:b" {
		t.Fatalf("reloaded %+v", got)
	}
}

// TestCorruptStateFilesAreMovedAside: bad input gets a clear error and
// loses nothing — the damaged file is kept beside, the store starts empty.
func TestCorruptStateFilesAreMovedAside(t *testing.T) {
	dir := t.TempDir()
	rp := filepath.Join(dir, "registrations.json")
	os.WriteFile(rp, []byte("{not json"), 0o600)
	f, err := OpenRegistrations(rp)
	if !errors.Is(err, ErrCorrupt) || f == nil {
		t.Fatalf("corrupt registrations: %v", err)
	}
	if m, _ := filepath.Glob(rp + ".corrupt-*"); len(m) != 1 {
		t.Fatalf("corrupt file not kept aside: %v", m)
	}

	sp := filepath.Join(dir, "sessions.snap")
	s, _ := OpenSnapshots(sp)
	snaps := []Snapshot{{ID: []byte("id-1"), Identity: []byte("dev"), Sealed: []byte("sealed bytes"), Saved: time.Unix(5, 6)}}
	if err := s.SaveSnapshots(context.Background(), snaps, nil); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(sp)
	for _, bad := range [][]byte{data[:len(data)-1], append(bytes.Clone(data[:20]), 0xff), {}, []byte("GWSNAP1\n")} {
		os.WriteFile(sp, bad, 0o600)
		if _, err := OpenSnapshots(sp); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("damaged snapshot file (%d bytes): %v", len(bad), err)
		}
	}
	flipped := bytes.Clone(data)
	flipped[15] ^= 1
	os.WriteFile(sp, flipped, 0o600)
	if _, err := OpenSnapshots(sp); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("altered snapshot file: %v", err)
	}
	os.WriteFile(sp, data, 0o600)
	g, err := OpenSnapshots(sp)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := g.LoadSnapshots(context.Background())
	if len(got) != 1 || !bytes.Equal(got[0].Sealed, snaps[0].Sealed) || !got[0].Saved.Equal(snaps[0].Saved) {
		t.Fatalf("reloaded %+v", got)
	}
}

func FuzzDecodeSnapshots(f *testing.F) {
	good, _ := encodeSnapshots([]Snapshot{{ID: []byte("a"), Identity: []byte("b"), Sealed: []byte("c")}})
	f.Add(good)
	f.Add([]byte("GWSNAP1\n\x00\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		snaps, err := decodeSnapshots(data)
		if err != nil {
			return
		}
		again, err := encodeSnapshots(snaps)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("decoded file does not re-encode to itself: %v", err)
		}
	})
}
