package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/memory"
	"github.com/lwm2m-gateway/gateway/pskstore/postgres"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// newLogger builds the zap logger the configuration asks for at level, an
// atomic level that a reload can change, writing to w (standard error).
// Errors carry no stack trace: the gateway's own messages say what failed.
// Lines wait up to log.flush_interval in a buffer (zapcore's
// BufferedWriteSyncer) so that a burst of sessions costs one write per
// buffer, not per line; an entry at Error or above flushes the buffer at
// once. The caller calls Sync before it exits.
func newLogger(c config.Log, level zap.AtomicLevel, w zapcore.WriteSyncer) (*zap.Logger, error) {
	ec := zap.NewProductionEncoderConfig()
	enc := zapcore.NewJSONEncoder
	if c.Format == config.FormatConsole {
		ec = zap.NewDevelopmentEncoderConfig()
		enc = zapcore.NewConsoleEncoder
	}
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	lvl, err := zapcore.ParseLevel(string(c.Level))
	if err != nil {
		return nil, err
	}
	level.SetLevel(lvl)
	out := zapcore.Lock(w)
	// No caller field: its stack walk was a measurable part of a
	// handshake's cost (bench/BENCHMARKS.md); messages are unique enough.
	// No sampling: the gateway samples its attacker-triggerable logs
	// itself.
	opts := []zap.Option{zap.ErrorOutput(out)}
	if c.FlushInterval > 0 {
		buf := &zapcore.BufferedWriteSyncer{WS: out, Size: 256 << 10, FlushInterval: time.Duration(c.FlushInterval)}
		out = buf
		opts = append(opts, zap.Hooks(func(e zapcore.Entry) error {
			if e.Level >= zapcore.ErrorLevel {
				return buf.Sync()
			}
			return nil
		}))
	}
	return zap.New(zapcore.NewCore(enc(ec), out, level), opts...), nil
}

// keyStore is the configured key store, opened, with what goes with it.
type keyStore struct {
	pskstore.Store                  // the backend itself, handed to the gateway (its capabilities are type-asserted)
	policy         pskstore.Options // its policy, Tagger included
	kek            *sealed.KEK      // nil: plaintext keys
	cfg            config.Store
	where          string // the key file, or the database and schema; never credentials
	shared         bool   // PostgreSQL: every replica reads and watches it
}

// openOptions says how a command opens the store.
type openOptions struct {
	log        *zap.Logger // receives the warnings serve logs (and check-config prints)
	create     bool        // a missing key file is an empty store (psk gen, add)
	plaintext  bool        // accept plaintext keys whatever the configuration says (psk rekey)
	makeTagKey bool        // keep a new tag key next to the key store if there is none
	// announce tells the operator about a tag key just generated; nil:
	// o.log at Info.
	announce func(msg string)
}

// openStore opens the store of c.
func openStore(c *config.Config, o openOptions) (*keyStore, error) {
	ks := &keyStore{cfg: c.Store, policy: pskstore.Options{MaxIdentityLen: c.DTLS.MaxIdentityLength}}
	if o.plaintext {
		ks.cfg.InsecurePlaintextKeys = true
	}
	var err error
	if c.Store.Type == config.StoreMemory {
		if ks.policy.Tagger, err = tagger(c.Store, "", o); err != nil {
			return nil, err
		}
		ks.Store, err = memory.Open(nil, memory.WithPolicy(ks.policy))
		return ks, err
	}
	if ks.kek, err = loadKEK(c.Store.KEKFile, c.Store.KEKEnv); err != nil {
		return nil, err
	}
	if ks.kek == nil {
		o.log.Warn("psk store: keys are stored in plaintext; set store.kek_file or store.kek_env to seal them at rest")
	} else if c.Store.InsecurePlaintextKeys {
		o.log.Warn("psk store: store.insecure_plaintext_keys accepts plaintext keys although keys are sealed; seal them with `gateway psk rekey`")
	}
	if c.Store.KEKFile != "" {
		if err := file.CheckMode(c.Store.KEKFile); err != nil {
			o.log.Warn("psk store: store.kek_file " + c.Store.KEKFile + ": " + err.Error())
		}
	}
	if c.Store.Type == config.StorePostgres {
		return ks, ks.openPostgres(c.Store, o)
	}
	if ks.policy.Tagger, err = tagger(c.Store, filepath.Join(filepath.Dir(c.Store.Path), "tag.key"), o); err != nil {
		return nil, err
	}
	ks.where = c.Store.Path
	ks.Store, err = file.Open(c.Store.Path, file.WithPolicy(ks.policy), file.WithLogger(o.log), file.WithKEK(ks.kek),
		file.WithInsecurePlaintextKeys(ks.cfg.InsecurePlaintextKeys), file.WithCreate(o.create))
	return ks, err
}

// postgresOpenTimeout bounds connecting to PostgreSQL and migrating its
// schema at start.
const postgresOpenTimeout = 30 * time.Second

// openPostgres opens the PostgreSQL store of c (store.dsn or
// store.dsn_env). Without store.tag_key_file identities are tagged with the
// tag key the database keeps.
func (ks *keyStore) openPostgres(c config.Store, o openOptions) error {
	dsn := c.DSN
	if c.DSNEnv != "" {
		if dsn = os.Getenv(c.DSNEnv); dsn == "" {
			return fmt.Errorf("store.dsn_env: environment variable %s is not set", c.DSNEnv)
		}
	}
	if c.DSN != "" && config.DSNHasPassword(c.DSN) {
		o.log.Warn("psk store: store.dsn holds a password in the configuration file; move the DSN to an environment variable (store.dsn_env)")
	}
	var err error
	if c.TagKeyFile != "" {
		if ks.policy.Tagger, err = tagger(c, "", o); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), postgresOpenTimeout)
	defer cancel()
	s, err := postgres.Open(ctx, dsn, postgres.WithLookupTimeout(time.Duration(c.LookupTimeout)), postgres.WithPolicy(ks.policy),
		postgres.WithKEK(ks.kek), postgres.WithInsecurePlaintextKeys(ks.cfg.InsecurePlaintextKeys), postgres.WithLogger(o.log))
	if err != nil {
		return err
	}
	if ks.policy.Tagger == nil {
		ks.policy.Tagger = pskstore.NewTagger(s.TagKey())
	}
	ks.Store, ks.where, ks.shared = s, "the PostgreSQL store "+s.Location(), true
	return nil
}

// Close releases what the store holds (a PostgreSQL store's connections).
func (ks *keyStore) Close() {
	if c, ok := ks.Store.(io.Closer); ok {
		_ = c.Close()
	}
}

func (ks *keyStore) tag(identity []byte) string { return ks.policy.Tagger.Tag(identity) }

// tagger returns the identity tagger (R9): keyed with store.tag_key_file,
// or else with the tag key kept at beside (next to the key file), which is
// generated on first use when o.makeTagKey says so, so the gateway and the
// psk commands print the same tag for an identity. Without either, tags
// are keyed with a random secret and differ between runs; o.log says so.
func tagger(c config.Store, beside string, o openOptions) (*pskstore.Tagger, error) {
	path := c.TagKeyFile
	if path == "" {
		path = beside
	}
	if path == "" {
		return pskstore.NewTagger(nil), nil
	}
	secret, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && c.TagKeyFile == "" {
		if !o.makeTagKey {
			o.log.Warn("psk store: no identity-tag key yet; serve and gateway psk generate " + path + " on first use")
			return pskstore.NewTagger(nil), nil
		}
		if secret, err = newTagKey(path); err != nil {
			o.log.Warn("psk store: cannot keep an identity-tag key next to the key store, tags differ between runs; set store.tag_key_file",
				zap.String("path", path), zap.Error(err))
			return pskstore.NewTagger(nil), nil
		}
		msg := "generated the identity-tag key " + path + " next to the key store: the gateway and gateway psk tag identities with it (R9)"
		if o.announce != nil {
			o.announce(msg)
		} else {
			o.log.Info("psk store: "+msg, zap.String("path", path))
		}
	} else if err != nil {
		return nil, fmt.Errorf("store.tag_key_file: %w", err)
	}
	secret = []byte(strings.TrimSpace(string(secret)))
	if len(secret) < 16 {
		return nil, fmt.Errorf("tag key %s: secret shorter than 16 bytes", path)
	}
	return pskstore.NewTagger(secret), nil
}

// newTagKey writes 32 random bytes, in hex, to a new file at path (0600).
func newTagKey(path string) ([]byte, error) {
	b := make([]byte, 32)
	rand.Read(b)
	secret := []byte(hex.EncodeToString(b) + "\n")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(secret); err != nil {
		f.Close()
		return nil, err
	}
	return secret, f.Close()
}

// loadKEK reads a key-encryption key from a file or an environment
// variable, or returns nil when neither is given.
func loadKEK(path, env string) (*sealed.KEK, error) {
	switch {
	case path != "":
		k, err := sealed.ReadKEKFile(path)
		if err != nil {
			return nil, fmt.Errorf("store.kek_file: %w", err)
		}
		return k, nil
	case env != "":
		k, err := sealed.KEKFromEnv(env)
		if err != nil {
			return nil, fmt.Errorf("store.kek_env: %w", err)
		}
		return k, nil
	}
	return nil, nil
}
