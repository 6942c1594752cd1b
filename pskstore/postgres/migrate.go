package postgres

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// migrations holds the schema, one file per version, named
// NNNN_description.sql and applied in version order. A migration is never
// edited once released; a change is a new file.
//
//go:embed migrations/*.sql
var migrations embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations returns the embedded migrations sorted by version.
func loadMigrations() ([]migration, error) {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, f := range files {
		name := strings.TrimSuffix(strings.TrimPrefix(f, "migrations/"), ".sql")
		num, _, _ := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name does not start with a version number", f)
		}
		b, err := migrations.ReadFile(f)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share a version", ms[i-1].name, ms[i].name)
		}
	}
	return ms, nil
}

// migrate applies the migrations the schema lacks, all in one transaction
// holding an advisory lock keyed by the schema, so replicas starting
// together apply each migration once and the others wait and find them
// applied. The versions applied are kept in psk_schema_migrations (prefixed
// so it cannot clash with another tool's schema_migrations table). It
// returns the schema.
func migrate(ctx context.Context, c *pgx.Conn, log *zap.Logger) (string, error) {
	ms, err := loadMigrations()
	if err != nil {
		return "", fmt.Errorf("migrate: %w", err)
	}
	var schema *string
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			return err
		}
		if schema == nil {
			return errors.New("no schema of the search_path exists to create the tables in")
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('gateway pskstore migrate ' || $1::text, 0))`, *schema); err != nil {
			return err
		}
		// The functions of the migrations capture the search path (SET
		// search_path FROM CURRENT): make it exactly this schema.
		if _, err := tx.Exec(ctx, `SELECT set_config('search_path', quote_ident($1::text), true)`, *schema); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS psk_schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT version FROM psk_schema_migrations`)
		if err != nil {
			return err
		}
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return err
		}
		for _, m := range ms {
			if slices.Contains(applied, int32(m.version)) {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO psk_schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return err
			}
			log.Info("psk store: schema migrated", zap.String("migration", m.name), zap.String("schema", *schema))
		}
		if n := len(ms); n > 0 && len(applied) > 0 && int(slices.Max(applied)) > ms[n-1].version {
			log.Warn("psk store: the database schema is newer than this gateway; running anyway",
				zap.Int32("schema_version", slices.Max(applied)), zap.Int("known_version", ms[n-1].version))
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("migrate: %w", err)
	}
	return *schema, nil
}

// keyCheckLabel is HMAC'ed with the fingerprint secret into psk_store.key_check.
const keyCheckLabel = "pskstore/postgres key check v1"

func keyCheck(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(keyCheckLabel))
	return m.Sum(nil)
}

// fingerprintKey returns the store's fingerprint secret (R4): given, when
// it matches the check value kept in psk_store, or else the one kept
// there, which the first Open draws from crypto/rand. The INSERT … ON
// CONFLICT DO NOTHING settles a race between replicas opening a new store.
func fingerprintKey(ctx context.Context, c *pgx.Conn, given []byte) ([]byte, error) {
	var stored []byte
	if len(given) == 0 {
		stored = make([]byte, 32)
		rand.Read(stored)
	} else if len(given) < 16 {
		return nil, errors.New("FingerprintKey shorter than 16 bytes")
	}
	secret := given
	if len(given) == 0 {
		secret = stored
	}
	if _, err := c.Exec(ctx, `INSERT INTO psk_store (fingerprint_key, key_check) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`,
		stored, keyCheck(secret)); err != nil {
		return nil, err
	}
	var key, check []byte
	if err := c.QueryRow(ctx, `SELECT fingerprint_key, key_check FROM psk_store`).Scan(&key, &check); err != nil {
		return nil, err
	}
	switch {
	case len(given) > 0 && !hmac.Equal(check, keyCheck(given)):
		return nil, errors.New("FingerprintKey is not the secret this store was created with")
	case len(given) > 0:
		return given, nil
	case key == nil:
		return nil, errors.New("this store was created with a FingerprintKey: configure it")
	case !hmac.Equal(check, keyCheck(key)):
		return nil, errors.New("psk_store.key_check does not match psk_store.fingerprint_key")
	}
	return key, nil
}

// tagKey returns the identity-tag secret kept in psk_store.tag_key,
// drawing it from crypto/rand if there is none yet; the UPDATE … WHERE
// tag_key IS NULL settles a race between replicas.
func tagKey(ctx context.Context, c *pgx.Conn) ([]byte, error) {
	fresh := make([]byte, 32)
	rand.Read(fresh)
	if _, err := c.Exec(ctx, `UPDATE psk_store SET tag_key = $1 WHERE tag_key IS NULL`, fresh); err != nil {
		return nil, err
	}
	var key []byte
	if err := c.QueryRow(ctx, `SELECT tag_key FROM psk_store`).Scan(&key); err != nil {
		return nil, err
	}
	return key, nil
}
