package gateway

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// RegistrationStore persists each identity's LwM2M registration, so that a
// device updates the registration it created after a re-handshake or a
// gateway restart (L2: a registration belongs to the identity, not to one
// DTLS session). The gateway loads every saved registration at Serve and
// writes changes behind the data path (one writer goroutine, coalescing);
// a store that fails is logged and retried with the next change, never on
// the data path. Implementations must be safe for concurrent use.
type RegistrationStore interface {
	LoadRegistrations(ctx context.Context) ([]SavedRegistration, error)
	SaveRegistration(ctx context.Context, r SavedRegistration) error
	DeleteRegistration(ctx context.Context, identity []byte) error
}

// SavedRegistration is one identity's registration as the backend assigned
// it. It holds no key material; the identity is the store's key.
type SavedRegistration struct {
	Identity []byte
	Endpoint string        // the endpoint bound to the identity when it registered
	Location string        // "/rd/…", from the backend's 2.01 Created
	Lifetime time.Duration // lt of the Register or the last Update
	Updated  time.Time     // when the registration was created or last updated
}

// expired reports whether a backend has certainly dropped the registration:
// its lifetime and the grace have passed since the last update.
func (r *SavedRegistration) expired(now time.Time, grace time.Duration) bool {
	return r.Lifetime > 0 && now.Sub(r.Updated) > r.Lifetime+grace
}

// registry holds the identities' registrations in memory (the source of
// truth while the process runs) and writes them behind to the store.
type registry struct {
	store RegistrationStore
	log   *zap.Logger
	grace time.Duration

	mu      sync.Mutex
	byID    map[string]*SavedRegistration
	byLoc   map[string]string    // location -> identity
	dirty   map[string]time.Time // identity -> when it changed; not yet written
	wake    chan struct{}
	flushed chan struct{} // closed and replaced each time the writer catches up
}

func newRegistry(store RegistrationStore, log *zap.Logger, grace time.Duration) *registry {
	return &registry{
		store: store, log: log, grace: grace,
		byID: make(map[string]*SavedRegistration), byLoc: make(map[string]string),
		dirty: make(map[string]time.Time), wake: make(chan struct{}, 1), flushed: make(chan struct{}),
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
		if reg.expired(now, r.grace) {
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
	if reg == nil || reg.Endpoint != endpoint || reg.expired(time.Now(), r.grace) {
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
	return reg != nil && !reg.expired(time.Now(), r.grace)
}

// put records a registration created or updated through the gateway.
func (r *registry) put(identity []byte, endpoint, location string, lifetime time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := string(identity)
	if old := r.byID[id]; old != nil && old.Location != location && r.byLoc[old.Location] == id {
		delete(r.byLoc, old.Location)
	}
	r.byID[id] = &SavedRegistration{Identity: []byte(id), Endpoint: endpoint, Location: location,
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

// writeDirty writes every pending change; failures stay pending and are
// retried with the next change.
func (r *registry) writeDirty() {
	r.mu.Lock()
	batch := make(map[string]*SavedRegistration, len(r.dirty))
	for id := range r.dirty {
		if reg := r.byID[id]; reg != nil {
			cp := *reg
			batch[id] = &cp
		} else {
			batch[id] = nil
		}
	}
	clear(r.dirty)
	r.mu.Unlock()
	var failed []string
	for id, reg := range batch {
		ctx, cancel := context.WithTimeout(context.Background(), registryWriteTimeout)
		var err error
		if reg != nil {
			err = r.store.SaveRegistration(ctx, *reg)
		} else {
			err = r.store.DeleteRegistration(ctx, []byte(id))
		}
		cancel()
		if err != nil {
			failed = append(failed, id)
			r.log.Warn("cannot save registration; retried with the next change", zap.Error(err))
		}
	}
	r.mu.Lock()
	for _, id := range failed {
		if _, again := r.dirty[id]; !again {
			r.dirty[id] = time.Now()
		}
	}
	close(r.flushed)
	r.flushed = make(chan struct{})
	r.mu.Unlock()
}

// registryWriteTimeout bounds one store write.
const registryWriteTimeout = 5 * time.Second
