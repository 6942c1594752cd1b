package postgres

import (
	"crypto"
	"fmt"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// keyColumns are the columns of psk_keys that make a pskstore.Key, in the
// order of row.dest and row.args.
const keyColumns = "identity, key, kek_id, hash, endpoint, server_name, backend, versions, modes, legacy, allow_low_entropy, grp, import_context"

// row is one psk_keys row as stored: key sealed, enums as the schema spells
// them.
type row struct {
	identity      []byte
	key           []byte // as seal stored it (seal.go)
	kekID         []byte // nil for a plaintext key
	hash          string
	endpoint      string
	serverName    string
	backend       string
	versions      int16
	modes         int16
	legacy        bool
	allowLow      bool
	group         bool
	importContext []byte
}

func (r *row) dest() []any {
	return []any{&r.identity, &r.key, &r.kekID, &r.hash, &r.endpoint, &r.serverName, &r.backend,
		&r.versions, &r.modes, &r.legacy, &r.allowLow, &r.group, &r.importContext}
}

// args are the values of keyColumns, then the fingerprint.
func (r *row) args(fingerprint []byte) []any {
	return []any{r.identity, r.key, nullable(r.kekID), r.hash, r.endpoint, r.serverName, r.backend,
		r.versions, r.modes, r.legacy, r.allowLow, r.group, nullable(r.importContext), fingerprint}
}

// nullable is b as a query argument, NULL when empty (no importer
// context, no KEK).
func nullable(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// toRow seals k under kek (nil: plaintext); the caller has checked and
// normalized k.
func toRow(kek *sealed.KEK, k pskstore.Key) (row, error) {
	stored, kekID, err := seal(kek, k.Identity, k.Secret)
	if err != nil {
		return row{}, err
	}
	return row{
		identity: k.Identity, key: stored, kekID: kekID, hash: pskstore.Hash(k.Hash).String(),
		endpoint: k.Endpoint, serverName: k.ServerName, backend: k.Backend,
		versions: int16(k.Versions), modes: int16(k.Modes),
		legacy: k.Legacy, allowLow: k.AllowLowEntropy, group: k.Group,
		importContext: k.ImportContext,
	}, nil
}

// toKey opens r into a Key under the store's KEK (plaintextOK: see
// Store.open). The scanned slices are the caller's own (pgx copies bytea
// into fresh slices), so the Key shares nothing with the store. Errors are
// *KeyError.
func (s *Store) toKey(r *row, plaintextOK bool) (pskstore.Key, error) {
	k, err := r.bindings(s.tag)
	if err != nil {
		return pskstore.Key{}, err
	}
	if k.Secret, err = s.open(r.identity, r.key, r.kekID, plaintextOK); err != nil {
		return pskstore.Key{}, err
	}
	if len(k.Secret) < pskstore.MinKeyLen { // R1, also when a row was written by hand
		return pskstore.Key{}, &KeyError{s.tag(r.identity), fmt.Errorf("%w: key is %d bytes (R1)", ErrCorruptRow, len(k.Secret))}
	}
	return k, nil
}

// bindings returns the Key of r without its key material. tag names the
// identity in errors.
func (r *row) bindings(tag func([]byte) string) (pskstore.Key, error) {
	var h pskstore.Hash
	if err := h.UnmarshalText([]byte(r.hash)); err != nil || r.hash == "" {
		return pskstore.Key{}, &KeyError{tag(r.identity), fmt.Errorf("%w: unknown hash", ErrCorruptRow)}
	}
	return pskstore.Key{
		Identity: r.identity, Hash: crypto.Hash(h),
		Endpoint: r.endpoint, ServerName: r.serverName, Backend: r.backend,
		Versions: pskstore.Versions(r.versions), Modes: pskstore.Modes(r.modes),
		Legacy: r.legacy, AllowLowEntropy: r.allowLow, Group: r.group,
		ImportContext: r.importContext,
	}, nil
}
