package main

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/postgres"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// pgAdmin is the PostgreSQL backend of the psk commands: every change is
// one transaction of pskstore/postgres, checked there against the stored
// keys (R4, R7 duplicates) and published to every gateway replica, which
// closes the sessions of revoked and rotated identities (R10).
type pgAdmin struct {
	s       *postgres.Store
	openErr error // why the store did not open (audit mode only)
}

var _ storeAdmin = (*pgAdmin)(nil)

// openPostgres opens the configuration's PostgreSQL store for a psk
// command. In audit mode a store that refuses to open because of its keys
// (a *postgres.KeyError: another KEK, plaintext keys) is reported by list,
// for audit to show as a finding.
func (ks *keyStore) openPostgres(mode openMode) error {
	ks.shared = true
	c := ks.cfg.Store
	c.InsecurePlaintextKeys = ks.plaintext
	s, err := openPostgres(c, ks.policy, ks.kek, zap.NewNop())
	var ke *postgres.KeyError
	switch {
	case err == nil:
		ks.admin = &pgAdmin{s: s}
	case mode == auditing && errors.As(err, &ke):
		ks.admin = &pgAdmin{openErr: err}
	default:
		return err
	}
	return nil
}

func (p *pgAdmin) close() {
	if p.s != nil {
		p.s.Close()
	}
}

func (p *pgAdmin) where() string {
	if p.s == nil {
		return "the PostgreSQL store"
	}
	return "the PostgreSQL store " + p.s.Location()
}

func (p *pgAdmin) list(ctx context.Context) ([]pskstore.Key, error) {
	if p.s == nil {
		return nil, p.openErr
	}
	return p.s.Keys(ctx)
}

func (p *pgAdmin) get(ctx context.Context, identity []byte) (pskstore.Key, error) {
	if p.s == nil {
		return pskstore.Key{}, p.openErr
	}
	k, err := p.s.Lookup(ctx, identity)
	if errors.Is(err, pskstore.ErrUnknownIdentity) {
		return k, pskstore.ErrUnknownIdentity // unwrapped, for the caller's message
	}
	return k, err
}

// loaded is nil: the store checks each write against its keys itself.
func (p *pgAdmin) loaded(context.Context) ([]pskstore.Key, error) { return nil, nil }

func (p *pgAdmin) add(ctx context.Context, keys []pskstore.Key, progress func(int)) error {
	if len(keys) == 1 {
		return p.s.Put(ctx, keys[0])
	}
	return p.s.PutMany(ctx, keys, progress)
}

func (p *pgAdmin) rotate(ctx context.Context, k pskstore.Key) error {
	return p.s.Rotate(ctx, k.Identity, k.Secret)
}

func (p *pgAdmin) revoke(ctx context.Context, identity []byte) error {
	err := p.s.Delete(ctx, identity)
	if errors.Is(err, pskstore.ErrUnknownIdentity) {
		return pskstore.ErrUnknownIdentity
	}
	return err
}

func (p *pgAdmin) replace(ctx context.Context, identity []byte, keys []pskstore.Key) error {
	return p.s.Replace(ctx, identity, keys)
}

func (p *pgAdmin) rekey(ctx context.Context, kek *sealed.KEK) (int, error) {
	found, err := p.s.Rekey(ctx, kek)
	return found.Keys, err
}

func (p *pgAdmin) plaintext(ctx context.Context) (map[string]bool, error) {
	if p.s == nil {
		return nil, p.openErr
	}
	ids, err := p.s.PlaintextIdentities(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[string(id)] = true
	}
	return out, nil
}

// storeError explains a refused write of keys to PostgreSQL: the key at
// fault by its identity and, through where, its place in the input (a CSV
// line), as checkNew does for the key file.
func storeError(err error, keys []pskstore.Key, where func(int) string) error {
	label := func(i int) string {
		l := "identity " + showID(keys[i].Identity)
		if where != nil && where(i) != "" {
			l = where(i) + ": " + l
		}
		return l
	}
	var pe *pskstore.PolicyError
	dup := "already exists (rotate replaces its key, revoke removes it); nothing written"
	switch {
	case errors.As(err, &pe) && pe.Index < len(keys) && errors.Is(err, pskstore.ErrDuplicateIdentity):
		return fmt.Errorf("%s: %s", label(pe.Index), dup)
	case errors.As(err, &pe) && pe.Index >= 0 && pe.Index < len(keys):
		// A finding against the stored keys (R4): those within keys were
		// found by checkNew before the write.
		return fmt.Errorf("%s: %v; nothing written", label(pe.Index), pe)
	}
	return err
}
