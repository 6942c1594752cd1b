package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// sanitize strips a *pgconn.PgError of the fields that may quote row data
// (Detail: "Key (identity)=(\x…) already exists", "Failing row contains
// (…)"; Where; InternalQuery), so neither identities nor keys reach an
// error string or a log (R9). errors.As still finds a *pgconn.PgError.
func sanitize(err error) error {
	var pe *pgconn.PgError
	if err == nil || !errors.As(err, &pe) {
		return err
	}
	return &pgconn.PgError{
		Severity: pe.Severity, SeverityUnlocalized: pe.SeverityUnlocalized,
		Code: pe.Code, Message: pe.Message, SchemaName: pe.SchemaName,
		TableName: pe.TableName, ColumnName: pe.ColumnName,
		DataTypeName: pe.DataTypeName, ConstraintName: pe.ConstraintName,
	}
}

// Constraint names of 0001_init.sql that writes can violate.
const (
	pkeyConstraint        = "psk_keys_pkey"
	fingerprintConstraint = "psk_keys_fingerprint_unique"
)

// writeError turns the error of a write of identity, keys[index] of the
// write, into what callers branch on: the finding of
// pskstore.DuplicateIdentity, the R4 finding of pskstore.SharedKey when
// the key material is held by another identity, ErrClosed, ctx's error,
// or else an error wrapping pskstore.ErrUnavailable. other looks up the
// identity holding a fingerprint, best effort, to name it by tag.
func (s *Store) writeError(op string, identity []byte, index int, err error, other func() []byte) error {
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == pkeyConstraint && identity == nil:
		return fmt.Errorf("postgres: %s: %w", op, pskstore.ErrDuplicateIdentity)
	case errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == pkeyConstraint:
		return fmt.Errorf("postgres: %s: %w", op, pskstore.DuplicateIdentity(s.tag(identity), index))
	case errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == fingerprintConstraint && identity == nil:
		return fmt.Errorf("postgres: %s: %w", op, &pskstore.PolicyError{Rule: "R4", Field: "Secret", Msg: "same key material as a stored identity"})
	case errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == fingerprintConstraint:
		return fmt.Errorf("postgres: %s: %w", op, s.sharedKeyError(identity, index, other))
	case errors.Is(err, ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("postgres: %s: %w", op, sanitize(err))
	case errors.As(err, &pe) && strings.HasPrefix(pe.Code, "23") && identity == nil: // a constraint of the schema
		return fmt.Errorf("postgres: %s: %w", op, sanitize(err))
	case errors.As(err, &pe) && strings.HasPrefix(pe.Code, "23"):
		return fmt.Errorf("postgres: %s: identity %s: %w", op, s.tag(identity), sanitize(err))
	}
	return fmt.Errorf("postgres: %s: %w: %w", op, pskstore.ErrUnavailable, sanitize(err))
}

// sharedKeyError is the R4 finding for key material already held by
// another identity, keys[index] of the write; it names both identities by
// tag and never the key.
func (s *Store) sharedKeyError(identity []byte, index int, other func() []byte) *pskstore.PolicyError {
	holder := "(another identity)"
	if other != nil {
		if o := other(); o != nil {
			holder = s.tag(o)
		}
	}
	return pskstore.SharedKey(s.tag(identity), index, pskstore.KeyRef{Index: pskstore.InStore, Tag: holder})
}

// holderOf returns a function that finds the identity holding fingerprint,
// on a connection of its own, or nil.
func (s *Store) holderOf(ctx context.Context, fingerprint []byte) func() []byte {
	return func() []byte {
		var id []byte
		_ = s.withConn(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, `SELECT identity FROM psk_keys WHERE fingerprint = $1`, fingerprint).Scan(&id)
		})
		return id
	}
}

// readError classifies the error of a read: ErrClosed, ctx's error and
// keys that do not open (*KeyError) as they are, anything else wrapping
// pskstore.ErrUnavailable.
func (s *Store) readError(err error) error {
	var ke *KeyError
	switch {
	case errors.Is(err, ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ke):
		return sanitize(err)
	}
	return fmt.Errorf("%w: %w", pskstore.ErrUnavailable, sanitize(err))
}

// isPolicy reports whether err carries a *pskstore.PolicyError.
func isPolicy(err error) bool {
	var pe *pskstore.PolicyError
	return errors.As(err, &pe)
}
