package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/gateway"
	"github.com/lwm2m-gateway/gateway/statestore"
)

// snapshotPurpose names the key, derived from the store's KEK, that seals
// session snapshots (key separation from the sealed PSKs).
const snapshotPurpose = "gateway session snapshot v1"

// stateStores are where the gateway keeps what outlives the process.
type stateStores struct {
	registrations gateway.RegistrationStore // nil: in memory only
	sessions      gateway.SessionStore      // nil: sessions end with the process
	sealer        gateway.Sealer
}

// openState opens the registrations store (a file next to the key file;
// the PostgreSQL store's database) and, with sessions.snapshot, the
// session snapshots. A damaged state file is moved aside and logged; the
// gateway starts without it.
func openState(c *config.Config, ks *keyStore, log *zap.Logger) (stateStores, error) {
	var st stateStores
	switch c.Store.Type {
	case config.StoreFile:
		path := filepath.Join(filepath.Dir(c.Store.Path), "registrations.json")
		f, err := statestore.OpenRegistrations(path)
		if errors.Is(err, statestore.ErrCorrupt) {
			log.Error("registrations file damaged; devices that re-handshake will re-register", zap.Error(err))
		} else if err != nil {
			return st, err
		}
		st.registrations = f
	case config.StorePostgres:
		if p, ok := ks.Store.(interface {
			StateStore() gateway.RegistrationStore
		}); ok {
			st.registrations = p.StateStore()
		}
	}
	if c.Sessions.Snapshot == "" {
		return st, nil
	}
	if ks.kek == nil {
		return st, errors.New("sessions.snapshot: the key store has no key-encryption key to seal snapshots with")
	}
	sealer, err := ks.kek.For(snapshotPurpose)
	if err != nil {
		return st, err
	}
	st.sealer = sealer
	if c.Sessions.Snapshot == config.SnapshotPostgres {
		p, ok := ks.Store.(interface{ SessionStore() gateway.SessionStore })
		if !ok {
			return st, errors.New("sessions.snapshot: postgres needs the PostgreSQL key store")
		}
		st.sessions = p.SessionStore()
		return st, nil
	}
	f, err := statestore.OpenSnapshots(c.Sessions.Snapshot)
	if errors.Is(err, statestore.ErrCorrupt) {
		log.Error("session snapshot file damaged; devices will handshake again", zap.Error(err))
	} else if err != nil {
		return st, fmt.Errorf("sessions.snapshot: %w", err)
	}
	st.sessions = f
	return st, nil
}
