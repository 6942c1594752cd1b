package postgres

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// Key material at rest. Every write of psk_keys.key goes through seal and
// every read through open; psk_keys.kek_id (0002_sealed_keys.sql) names
// the KEK of a sealed key, NULL for a plaintext one. The semantics are the
// file store's (pskstore/file WithKEK): with a KEK keys are written sealed
// and a plaintext key is refused unless InsecurePlaintextKeys; without one
// keys are written in plaintext and a sealed key is refused.

// Errors of keys the configuration does not allow, wrapped in a *KeyError.
var (
	// ErrPlaintextKey: a plaintext key in a store with a KEK, without
	// WithInsecurePlaintextKeys.
	ErrPlaintextKey = errors.New("plaintext key in a store with a key-encryption key: seal it (gateway psk rekey) or explicitly allow insecure plaintext keys")
	// ErrNoKEK: a sealed key in a store opened without a KEK.
	ErrNoKEK = errors.New("sealed key and no key-encryption key configured: configure the key-encryption key the store was sealed with")
	// ErrCorruptRow: a row the schema's constraints should have prevented
	// (a key shorter than 16 bytes, an unknown hash).
	ErrCorruptRow = errors.New("corrupt row")
)

// KeyError is a stored key the store cannot serve: plaintext where keys
// must be sealed (ErrPlaintextKey), sealed without a KEK (ErrNoKEK), sealed
// under another KEK (sealed.ErrWrongKEK, naming both KEK ids), altered or
// copied from another identity (sealed.ErrCorrupt), or a corrupt row
// (ErrCorruptRow). It names the identity by its tag only and never carries
// key material (R9). Lookup wraps it with pskstore.ErrUnavailable.
type KeyError struct {
	Tag string // the identity's keyed tag
	Err error
}

func (e *KeyError) Error() string { return "identity " + e.Tag + ": " + e.Err.Error() }

// Unwrap returns Err, for errors.Is with the sentinels above and package
// sealed's.
func (e *KeyError) Unwrap() error { return e.Err }

// seal returns what is stored for key of identity: the key sealed under
// kek and kek's id, or, with a nil kek, the key itself and a nil id.
func seal(kek *sealed.KEK, identity []byte, key pskstore.Secret) (stored, kekID []byte, err error) {
	if kek == nil {
		return key, nil, nil
	}
	v, err := kek.Seal(identity, key)
	if err != nil {
		return nil, nil, err
	}
	id, err := hex.DecodeString(kek.ID())
	if err != nil {
		return nil, nil, err
	}
	return v, id, nil
}

// open returns the key of identity from what seal stored, under the
// store's current KEK. With plaintextOK a plaintext key is accepted
// although the store has a KEK (InsecurePlaintextKeys, and Rekey, which
// seals such keys). Errors are *KeyError.
func (s *Store) open(identity, stored, kekID []byte, plaintextOK bool) (pskstore.Secret, error) {
	return openWith(s.kek.Load(), s.tag, identity, stored, kekID, plaintextOK || s.insecure)
}

func openWith(kek *sealed.KEK, tag func([]byte) string, identity, stored, kekID []byte, plaintextOK bool) (pskstore.Secret, error) {
	var err error
	switch {
	case kekID == nil && kek != nil && !plaintextOK:
		err = ErrPlaintextKey
	case kekID == nil:
		return pskstore.Secret(stored), nil
	case kek == nil:
		err = ErrNoKEK
	default:
		var key pskstore.Secret
		if key, err = kek.Open(identity, stored); err == nil {
			return key, nil
		}
	}
	return nil, &KeyError{Tag: tag(identity), Err: err}
}

// checkSealing is Open's check that every stored key opens under the
// configuration, by the KEK id kept with each key (indexed, so a large
// table is not scanned): the first key that breaks a rule fails Open,
// named by tag, so a replica given the wrong KEK does not start and serve
// nothing. Keys sealed under one KEK all match one index entry.
func (s *Store) checkSealing(ctx context.Context, c *pgx.Conn) error {
	kek := s.kek.Load()
	var (
		query string
		args  []any
	)
	switch {
	case kek == nil:
		query = `SELECT identity, kek_id FROM psk_keys WHERE kek_id IS NOT NULL LIMIT 1`
	case s.insecure:
		query = `SELECT identity, kek_id FROM psk_keys WHERE kek_id < $1 OR kek_id > $1 LIMIT 1`
		args = []any{kekIDBytes(kek)}
	default:
		query = `SELECT identity, kek_id FROM psk_keys WHERE kek_id IS NULL OR kek_id < $1 OR kek_id > $1 LIMIT 1`
		args = []any{kekIDBytes(kek)}
	}
	var identity, kekID []byte
	err := c.QueryRow(ctx, query, args...).Scan(&identity, &kekID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return err
	}
	var why error
	switch {
	case kekID == nil:
		why = ErrPlaintextKey
	case kek == nil:
		why = ErrNoKEK
	default:
		why = fmt.Errorf("%w: sealed under kek %x, the configured kek is %s", sealed.ErrWrongKEK, kekID, kek.ID())
	}
	return &KeyError{Tag: s.tag(identity), Err: why}
}

func kekIDBytes(k *sealed.KEK) []byte {
	b, _ := hex.DecodeString(k.ID())
	return b
}

// KEKs counts the stored keys by the id of the KEK they are sealed under
// (sealed.KEK.ID), "" counting the plaintext keys; for audits.
func (s *Store) KEKs(ctx context.Context) (map[string]int64, error) {
	out := make(map[string]int64)
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT kek_id, count(*) FROM psk_keys GROUP BY kek_id`)
		if err != nil {
			return err
		}
		var (
			id []byte
			n  int64
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error {
			out[hex.EncodeToString(id)] = n
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: keks: %w", s.readError(err))
	}
	return out, nil
}
