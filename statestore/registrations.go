package statestore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync"
	"time"
)

// RegistrationFile keeps registrations in one JSON file (mode 0600),
// rewritten atomically on every save: a fleet's registrations change
// rarely (Register, De-register, a new lifetime), and the gateway batches
// the changes. The file holds identities, endpoint names and locations,
// no key material; it sits next to the key file, which holds the same
// identities. Safe for concurrent use.
type RegistrationFile struct {
	path string

	mu   sync.Mutex
	regs set[Registration]
}

// registrationsFormat is the file's version; a file of another version is
// refused rather than misread.
const registrationsFormat = 1

type registrationsJSON struct {
	Version       int                `json:"version"`
	Registrations []registrationJSON `json:"registrations"`
}

type registrationJSON struct {
	IdentityHex string    `json:"identity_hex"`
	Endpoint    string    `json:"endpoint"`
	Location    string    `json:"location"`
	LifetimeSec int64     `json:"lifetime_s"`
	Updated     time.Time `json:"updated"`
}

// OpenRegistrations opens (or prepares to create) the registrations file at
// path. A file that does not parse is moved aside and reported with
// ErrCorrupt; the store is still returned, empty, and usable.
func OpenRegistrations(path string) (*RegistrationFile, error) {
	f := &RegistrationFile{path: path, regs: set[Registration]{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("statestore: %w", err)
	}
	var doc registrationsJSON
	if err := json.Unmarshal(data, &doc); err != nil || doc.Version != registrationsFormat {
		why := fmt.Sprintf("version %d", doc.Version)
		if err != nil {
			why = err.Error()
		}
		aside := moveAside(path)
		return f, fmt.Errorf("%w: %s (%s); moved to %s, starting empty", ErrCorrupt, path, why, aside)
	}
	for _, r := range doc.Registrations {
		id, err := hex.DecodeString(r.IdentityHex)
		if err != nil || len(id) == 0 {
			aside := moveAside(path)
			return &RegistrationFile{path: path, regs: set[Registration]{}},
				fmt.Errorf("%w: %s: bad identity_hex; moved to %s, starting empty", ErrCorrupt, path, aside)
		}
		f.regs[string(id)] = Registration{Identity: id, Endpoint: r.Endpoint, Location: r.Location,
			Lifetime: time.Duration(r.LifetimeSec) * time.Second, Updated: r.Updated}
	}
	return f, nil
}

// LoadRegistrations returns every saved registration.
func (f *RegistrationFile) LoadRegistrations(context.Context) ([]Registration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.regs.values(), nil
}

// SaveRegistrations stores put and forgets the identities in del, then
// rewrites the file. On a write error the file keeps its previous content
// and the change stays pending in memory for the next save.
func (f *RegistrationFile) SaveRegistrations(_ context.Context, put []Registration, del [][]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.regs.apply(put, del, func(r Registration) []byte { return r.Identity })
	doc := registrationsJSON{Version: registrationsFormat, Registrations: make([]registrationJSON, 0, len(f.regs))}
	for _, r := range f.regs {
		doc.Registrations = append(doc.Registrations, registrationJSON{IdentityHex: hex.EncodeToString(r.Identity),
			Endpoint: r.Endpoint, Location: r.Location, LifetimeSec: int64(r.Lifetime / time.Second), Updated: r.Updated.UTC()})
	}
	sort.Slice(doc.Registrations, func(i, j int) bool { return doc.Registrations[i].IdentityHex < doc.Registrations[j].IdentityHex })
	data, err := json.MarshalIndent(doc, "", " ")
	if err != nil {
		return fmt.Errorf("statestore: %w", err)
	}
	return writeAtomic(f.path, append(data, '\n'))
}
