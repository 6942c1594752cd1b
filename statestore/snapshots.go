package statestore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync"
	"time"
)

// SnapshotFile keeps session snapshots in one file the operator names
// (sessions.snapshot), rewritten atomically by every save: the gateway
// saves in batches (a checkpoint every few seconds, and everything at a
// graceful stop). Entries are sealed by the gateway; the file adds a
// version, a count and a SHA-256 checksum so a truncated or damaged file is
// refused whole (ErrCorrupt) instead of half-read. Safe for concurrent use.
//
// Format, version 1, all integers big-endian:
//
//	"GWSNAP1\n"                       magic and version
//	uint32 count
//	count × {uint16 len, id; uint16 len, identity; int64 saved (unix ns); uint32 len, sealed}
//	[32]byte SHA-256 of everything before
type SnapshotFile struct {
	path string

	mu    sync.Mutex
	snaps set[Snapshot]
}

var snapshotMagic = []byte("GWSNAP1\n")

// maxSnapshotFile bounds what is read at start (about 2 million sessions).
const maxSnapshotFile = 1 << 30

// OpenSnapshots opens (or prepares to create) the snapshot file at path. A
// damaged file is moved aside and reported with ErrCorrupt; the returned
// store is empty and usable.
func OpenSnapshots(path string) (*SnapshotFile, error) {
	f := &SnapshotFile{path: path, snaps: set[Snapshot]{}}
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("statestore: %w", err)
	}
	if st.Size() > maxSnapshotFile {
		return nil, fmt.Errorf("statestore: %s: %d bytes, above the %d limit", path, st.Size(), maxSnapshotFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("statestore: %w", err)
	}
	snaps, err := decodeSnapshots(data)
	if err != nil {
		aside := moveAside(path)
		return f, fmt.Errorf("%w: %s: %v; moved to %s, starting empty", ErrCorrupt, path, err, aside)
	}
	for _, s := range snaps {
		f.snaps[string(s.ID)] = s
	}
	return f, nil
}

// LoadSnapshots returns every saved snapshot.
func (f *SnapshotFile) LoadSnapshots(context.Context) ([]Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snaps.values(), nil
}

// SaveSnapshots stores put and forgets the sessions in del (by id), then
// rewrites the file. On a write error the file keeps its previous content.
func (f *SnapshotFile) SaveSnapshots(_ context.Context, put []Snapshot, del [][]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snaps.apply(put, del, func(s Snapshot) []byte { return s.ID })
	all := f.snaps.values()
	sort.Slice(all, func(i, j int) bool { return bytes.Compare(all[i].ID, all[j].ID) < 0 })
	data, err := encodeSnapshots(all)
	if err != nil {
		return err
	}
	return writeAtomic(f.path, data)
}

func encodeSnapshots(snaps []Snapshot) ([]byte, error) {
	b := append([]byte(nil), snapshotMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(snaps)))
	for _, s := range snaps {
		if len(s.ID) > 0xffff || len(s.Identity) > 0xffff || len(s.Sealed) > 1<<20 {
			return nil, fmt.Errorf("statestore: snapshot field too long")
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.ID)))
		b = append(b, s.ID...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.Identity)))
		b = append(b, s.Identity...)
		b = binary.BigEndian.AppendUint64(b, uint64(s.Saved.UnixNano()))
		b = binary.BigEndian.AppendUint32(b, uint32(len(s.Sealed)))
		b = append(b, s.Sealed...)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

func decodeSnapshots(data []byte) ([]Snapshot, error) {
	if len(data) < len(snapshotMagic)+4+sha256.Size || !bytes.Equal(data[:len(snapshotMagic)], snapshotMagic) {
		return nil, errors.New("not a version-1 snapshot file")
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if want := sha256.Sum256(body); !bytes.Equal(want[:], sum) {
		return nil, errors.New("checksum mismatch (truncated or altered)")
	}
	r := body[len(snapshotMagic):]
	count := binary.BigEndian.Uint32(r)
	r = r[4:]
	take := func(n int) ([]byte, bool) {
		if len(r) < n {
			return nil, false
		}
		v := r[:n:n]
		r = r[n:]
		return v, true
	}
	u16 := func() (int, bool) {
		v, ok := take(2)
		if !ok {
			return 0, false
		}
		return int(binary.BigEndian.Uint16(v)), true
	}
	out := make([]Snapshot, 0, min(count, 1<<20))
	for range count {
		var s Snapshot
		n, ok := u16()
		if s.ID, ok = take(n); !ok || n == 0 {
			return nil, errors.New("truncated entry")
		}
		if n, ok = u16(); !ok {
			return nil, errors.New("truncated entry")
		}
		if s.Identity, ok = take(n); !ok {
			return nil, errors.New("truncated entry")
		}
		saved, ok := take(8)
		if !ok {
			return nil, errors.New("truncated entry")
		}
		s.Saved = time.Unix(0, int64(binary.BigEndian.Uint64(saved)))
		ln, ok := take(4)
		if !ok {
			return nil, errors.New("truncated entry")
		}
		if s.Sealed, ok = take(int(binary.BigEndian.Uint32(ln))); !ok {
			return nil, errors.New("truncated entry")
		}
		out = append(out, s)
	}
	if len(r) != 0 {
		return nil, errors.New("trailing bytes")
	}
	return out, nil
}
