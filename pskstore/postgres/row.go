package postgres

import (
	"crypto"
	"fmt"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// keyColumns are the columns of psk_keys that make a pskstore.Key, in the
// order of row.dest and row.args.
const keyColumns = "identity, key, hash, endpoint, server_name, backend, versions, modes, legacy, allow_low_entropy, grp, import_context"

// row is one psk_keys row as stored: key sealed, enums as the schema spells
// them.
type row struct {
	identity      []byte
	key           []byte // sealed (seal.go)
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
	return []any{&r.identity, &r.key, &r.hash, &r.endpoint, &r.serverName, &r.backend,
		&r.versions, &r.modes, &r.legacy, &r.allowLow, &r.group, &r.importContext}
}

// args are the values of keyColumns, then the fingerprint.
func (r *row) args(fingerprint []byte) []any {
	var ic any // NULL for no importer context
	if len(r.importContext) > 0 {
		ic = r.importContext
	}
	return []any{r.identity, r.key, r.hash, r.endpoint, r.serverName, r.backend,
		r.versions, r.modes, r.legacy, r.allowLow, r.group, ic, fingerprint}
}

// toRow seals k, which the caller has checked and normalized.
func toRow(k pskstore.Key) (row, error) {
	sealed, err := seal(k.Identity, k.Secret)
	if err != nil {
		return row{}, err
	}
	h := "sha256"
	if k.Hash == crypto.SHA384 {
		h = "sha384"
	}
	return row{
		identity: k.Identity, key: sealed, hash: h,
		endpoint: k.Endpoint, serverName: k.ServerName, backend: k.Backend,
		versions: int16(k.Versions), modes: int16(k.Modes),
		legacy: k.Legacy, allowLow: k.AllowLowEntropy, group: k.Group,
		importContext: k.ImportContext,
	}, nil
}

// errCorrupt marks a row the schema's constraints should have prevented.
type errCorrupt struct{ tag, msg string }

func (e *errCorrupt) Error() string { return "identity " + e.tag + ": corrupt row: " + e.msg }

// key opens r into a Key. The scanned slices are the caller's own (pgx
// copies bytea into fresh slices), so the Key shares nothing with the
// store. tag names the identity in errors.
func (r *row) toKey(tag func([]byte) string) (pskstore.Key, error) {
	secret, err := open(r.identity, r.key)
	if err != nil {
		return pskstore.Key{}, &errCorrupt{tag(r.identity), "key does not open"}
	}
	if len(secret) < pskstore.MinKeyLen { // R1, also when a row was written by hand
		return pskstore.Key{}, &errCorrupt{tag(r.identity), fmt.Sprintf("key is %d bytes (R1)", len(secret))}
	}
	var h crypto.Hash
	switch r.hash {
	case "sha256":
		h = crypto.SHA256
	case "sha384":
		h = crypto.SHA384
	default:
		return pskstore.Key{}, &errCorrupt{tag(r.identity), "unknown hash"}
	}
	return pskstore.Key{
		Identity: r.identity, Secret: pskstore.Secret(secret), Hash: h,
		Endpoint: r.endpoint, ServerName: r.serverName, Backend: r.backend,
		Versions: pskstore.Versions(r.versions), Modes: pskstore.Modes(r.modes),
		Legacy: r.legacy, AllowLowEntropy: r.allowLow, Group: r.group,
		ImportContext: r.importContext,
	}, nil
}
