// Package statestore keeps the gateway's state that must outlive one
// process: each PSK identity's LwM2M registration (so a device that
// re-handshakes after a reboot or a gateway restart updates the registration
// it created, L2) and the sealed snapshots of established sessions (so a
// restart costs no handshake).
//
// It owns the record types and the file backends (a registrations file next
// to the key store, a snapshot file the operator names) and, in
// statestore/postgres, the PostgreSQL backend replicas share. It does not
// own what a snapshot contains nor how it is sealed: the gateway seals each
// snapshot with the key store's KEK before it reaches a store, so a store
// only ever holds ciphertext it cannot read. It imports nothing of this
// module.
package statestore

import (
	"errors"
	"fmt"
	"time"
)

// Registration is one identity's LwM2M registration as a backend assigned
// it. It holds no key material.
type Registration struct {
	Identity []byte
	Endpoint string        // the endpoint bound to the identity when it registered
	Location string        // "/rd/…", from the backend's 2.01 Created
	Lifetime time.Duration // lt of the Register or the last Update
	Updated  time.Time     // when it was created or last updated
}

// Snapshot is one established session's sealed state, opaque to the store.
type Snapshot struct {
	ID       []byte    // the session's id, unique (16 random bytes)
	Identity []byte    // its PSK identity: revocations and takeovers find it
	Sealed   []byte    // sealed by the gateway; the store cannot read it
	Saved    time.Time // when the gateway took it
	// CIDs are the Connection IDs routed to the session (they travel in
	// clear on the wire): a replica that receives a record of a session it
	// does not own finds the session by them (statestore/postgres).
	CIDs [][]byte
}

// Replica is a gateway replica as the shared store knows it.
type Replica struct {
	ID      int
	Address string // its end of the replicas' link
	Alive   bool   // its lease has not run out
}

// ErrNotTaken: a session to take over is not there, or its owner's lease
// still runs.
var ErrNotTaken = errors.New("statestore: session not taken over")

// ErrReplicaInUse: another live process holds this replica id's lease.
var ErrReplicaInUse = errors.New("statestore: another live process holds this replica id")

// NotOwnedError reports snapshots a save did not write because another
// replica owns their sessions now (it took them over); the rest of the
// save succeeded.
type NotOwnedError struct {
	IDs [][]byte
}

func (e *NotOwnedError) Error() string {
	return fmt.Sprintf("statestore: %d sessions are owned by another replica now", len(e.IDs))
}

// ErrCorrupt reports a state file that does not parse or whose checksum
// does not match; the file is moved aside (path + ".corrupt") so nothing is
// lost, and the store starts empty.
var ErrCorrupt = errors.New("statestore: corrupt state file")
