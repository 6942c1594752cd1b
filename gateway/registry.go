package gateway

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/lwm2m-gateway/gateway/statestore"

	"go.uber.org/zap"
)

// RegistrationStore persists each identity's LwM2M registration, so that a
// device updates the registration it created after a re-handshake or a
// gateway restart (L2: a registration belongs to the identity, not to one
// DTLS session). The gateway loads every saved registration at Serve and
// writes changes behind the data path, in batches (one writer goroutine); a
// store that fails is logged and the batch retried with the next change,
// never on the data path. statestore implements it (a file next to the key
// store, or PostgreSQL). Implementations must be safe for concurrent use.
type RegistrationStore interface {
	LoadRegistrations(ctx context.Context) ([]statestore.Registration, error)
	SaveRegistrations(ctx context.Context, put []statestore.Registration, del [][]byte) error
}

// expired reports whether a backend has certainly dropped the registration:
// its lifetime and the grace have passed since the last update.
func expired(r *statestore.Registration, now time.Time, grace time.Duration) bool {
	return r.Lifetime > 0 && now.Sub(r.Updated) > r.Lifetime+grace
}

// registry holds the identities' registrations in memory (the source of
// truth while the process runs) and writes them behind to the store.
type registry struct {
	store RegistrationStore
	log   *zap.Logger
	grace time.Duration

	mu    sync.Mutex
	byID  map[string]*statestore.Registration
	byLoc map[string]string    // location -> identity
	dirty map[string]time.Time // identity -> when it changed; not yet written
	wake  chan struct{}
}

func newRegistry(store RegistrationStore, log *zap.Logger, grace time.Duration) *registry {
	return &registry{
		store: store, log: log, grace: grace,
		byID: make(map[string]*statestore.Registration), byLoc: make(map[string]string),
		dirty: make(map[string]time.Time), wake: make(chan struct{}, 1),
	}
}

// load reads the saved registrations (at Serve).
func (r *registry) load(ctx context.Context) error {
	if r.store == nil {
		return nil
	}
	saved, err := r.store.LoadRegistrations(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range saved {
		reg := saved[i]
		if expired(&reg, now, r.grace) {
			continue
		}
		r.byID[string(reg.Identity)] = &reg
		r.byLoc[reg.Location] = string(reg.Identity)
	}
	return nil
}

// get returns the identity's live registration, if it was made under the
// same endpoint (a re-provisioned identity starts afresh).
func (r *registry) get(identity []byte, endpoint string) (location string, lifetime time.Duration, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reg := r.byID[string(identity)]
	if reg == nil || reg.Endpoint != endpoint || expired(reg, time.Now(), r.grace) {
		return "", 0, false
	}
	return reg.Location, reg.Lifetime, true
}

// ownedByOther reports whether location is a live registration of another
// identity (L2: 4.03 rather than 4.04).
func (r *registry) ownedByOther(location string, identity []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	owner, ok := r.byLoc[location]
	if !ok || owner == string(identity) {
		return false
	}
	reg := r.byID[owner]
	return reg != nil && !expired(reg, time.Now(), r.grace)
}

// put records a registration created or updated through the gateway.
func (r *registry) put(identity []byte, endpoint, location string, lifetime time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := string(identity)
	if old := r.byID[id]; old != nil && old.Location != location && r.byLoc[old.Location] == id {
		delete(r.byLoc, old.Location)
	}
	r.byID[id] = &statestore.Registration{Identity: []byte(id), Endpoint: endpoint, Location: location,
		Lifetime: lifetime, Updated: time.Now()}
	r.byLoc[location] = id
	r.markLocked(id)
}

// forget drops a registration the backend ended (2.02 Deleted, 4.04).
func (r *registry) forget(identity []byte, location string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := string(identity)
	if reg := r.byID[id]; reg != nil && reg.Location == location {
		delete(r.byID, id)
	}
	if r.byLoc[location] == id {
		delete(r.byLoc, location)
	}
	r.markLocked(id)
}

func (r *registry) markLocked(id string) {
	if r.store == nil {
		return
	}
	r.dirty[id] = time.Now()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run writes changes to the store until stop is closed, then once more.
func (r *registry) run(stop <-chan struct{}) {
	if r.store == nil {
		return
	}
	for {
		select {
		case <-r.wake:
			r.writeDirty()
		case <-stop:
			r.writeDirty()
			return
		}
	}
}

// writeDirty writes every pending change in one batch; on failure the
// batch stays pending and is retried with the next change.
func (r *registry) writeDirty() {
	r.mu.Lock()
	var put []statestore.Registration
	var del [][]byte
	for id := range r.dirty {
		if reg := r.byID[id]; reg != nil {
			put = append(put, *reg)
		} else {
			del = append(del, []byte(id))
		}
	}
	pending := maps.Clone(r.dirty)
	clear(r.dirty)
	r.mu.Unlock()
	if len(put)+len(del) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), registryWriteTimeout)
	err := r.store.SaveRegistrations(ctx, put, del)
	cancel()
	if err != nil {
		r.log.Warn("cannot save registrations; retried with the next change", zap.Int("changes", len(pending)), zap.Error(err))
		r.mu.Lock()
		for id, at := range pending {
			if _, again := r.dirty[id]; !again {
				r.dirty[id] = at
			}
		}
		r.mu.Unlock()
	}
}

// registryWriteTimeout bounds one store write.
const registryWriteTimeout = 5 * time.Second
