package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/gateway"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/memory"
	"github.com/lwm2m-gateway/gateway/pskstore/postgres"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newLogger builds the zap logger the configuration asks for at level, an
// atomic level that a reload can change.
func newLogger(c config.Log, level zap.AtomicLevel) (*zap.Logger, error) {
	var zc zap.Config
	if c.Format == config.FormatConsole {
		zc = zap.NewDevelopmentConfig()
		zc.DisableStacktrace = true
	} else {
		zc = zap.NewProductionConfig()
		zc.Sampling = nil // the gateway samples its attacker-triggerable logs itself
		// No caller field: its stack walk was a measurable part of a
		// handshake's cost (bench/BENCHMARKS.md); messages are unique enough.
		zc.DisableCaller = true
	}
	lvl, err := zapcore.ParseLevel(string(c.Level))
	if err != nil {
		return nil, err
	}
	level.SetLevel(lvl)
	zc.Level = level
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return zc.Build()
}

// newTagger reads the identity-tag secret (R9), or makes a random one.
func newTagger(c config.Store) (*pskstore.Tagger, error) {
	if c.TagKeyFile == "" {
		return pskstore.NewTagger(nil), nil
	}
	secret, err := os.ReadFile(c.TagKeyFile)
	if err != nil {
		return nil, fmt.Errorf("store.tag_key_file: %w", err)
	}
	secret = []byte(strings.TrimSpace(string(secret)))
	if len(secret) < 16 {
		return nil, fmt.Errorf("store.tag_key_file %s: secret shorter than 16 bytes", c.TagKeyFile)
	}
	return pskstore.NewTagger(secret), nil
}

// openStore opens the configured key store. A PostgreSQL store must be
// closed (io.Closer) when done.
func openStore(c *config.Config, tagger *pskstore.Tagger, log *zap.Logger) (gateway.KeyStore, error) {
	policy := pskstore.Options{MaxIdentityLen: c.DTLS.MaxIdentityLength, Tagger: tagger}
	if c.Store.Type == config.StoreMemory {
		return memory.Open(nil, memory.WithPolicy(policy))
	}
	kek, err := loadKEK(c.Store)
	if err != nil {
		return nil, err
	}
	if kek == nil {
		log.Warn("psk store: keys are stored in plaintext; set store.kek_file or store.kek_env to seal them at rest")
	} else if c.Store.InsecurePlaintextKeys {
		log.Warn("psk store: store.insecure_plaintext_keys accepts plaintext keys although keys are sealed; seal them with `gateway psk rekey`")
	}
	if c.Store.Type == config.StorePostgres {
		return openPostgres(c.Store, policy, kek, log)
	}
	return file.Open(c.Store.Path, file.WithPolicy(policy), file.WithLogger(log),
		file.WithKEK(kek), file.WithInsecurePlaintextKeys(c.Store.InsecurePlaintextKeys))
}

// lookupMargin is what the gateway's lookup bound leaves a PostgreSQL
// store's own one (store.lookup_timeout) to fail first.
const lookupMargin = 250 * time.Millisecond

// postgresOpenTimeout bounds connecting to PostgreSQL and migrating its
// schema at start.
const postgresOpenTimeout = 30 * time.Second

// openPostgres opens the PostgreSQL store of c (store.dsn or
// store.dsn_env), sealed under kek when not nil.
func openPostgres(c config.Store, policy pskstore.Options, kek *sealed.KEK, log *zap.Logger) (*postgres.Store, error) {
	dsn, err := storeDSN(c)
	if err != nil {
		return nil, err
	}
	if c.DSN != "" && config.DSNHasPassword(c.DSN) {
		log.Warn("psk store: store.dsn holds a password in the configuration file; move the DSN to an environment variable (store.dsn_env)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), postgresOpenTimeout)
	defer cancel()
	return postgres.Open(ctx, dsn, postgres.WithLookupTimeout(time.Duration(c.LookupTimeout)), postgres.WithPolicy(policy),
		postgres.WithKEK(kek), postgres.WithInsecurePlaintextKeys(c.InsecurePlaintextKeys), postgres.WithLogger(log))
}

// storeDSN returns the DSN of a postgres store: store.dsn, or the value of
// the variable store.dsn_env names. Errors never show a DSN.
func storeDSN(c config.Store) (string, error) {
	if c.DSNEnv == "" {
		return c.DSN, nil
	}
	dsn, ok := os.LookupEnv(c.DSNEnv)
	if !ok || dsn == "" {
		return "", fmt.Errorf("store.dsn_env: environment variable %s is not set", c.DSNEnv)
	}
	return dsn, nil
}

// loadKEK reads the key-encryption key of the store (store.kek_file or
// store.kek_env), or returns nil when none is configured.
func loadKEK(c config.Store) (*sealed.KEK, error) {
	switch {
	case c.KEKFile != "":
		k, err := sealed.ReadKEKFile(c.KEKFile)
		if err != nil {
			return nil, fmt.Errorf("store.kek_file: %w", err)
		}
		return k, nil
	case c.KEKEnv != "":
		k, err := sealed.KEKFromEnv(c.KEKEnv)
		if err != nil {
			return nil, fmt.Errorf("store.kek_env: %w", err)
		}
		return k, nil
	}
	return nil, nil
}

var groupIDs = map[config.Group]elliptic.Curve{
	config.GroupX25519:         elliptic.X25519,
	config.GroupX25519MLKEM768: elliptic.X25519MLKEM768,
	config.GroupP256:           elliptic.P256,
	config.GroupP384:           elliptic.P384,
}

var suiteIDs = map[config.CipherSuite]ciphersuite.ID{
	config.TLS_AES_128_GCM_SHA256:                ciphersuite.TLS_AES_128_GCM_SHA256,
	config.TLS_AES_256_GCM_SHA384:                ciphersuite.TLS_AES_256_GCM_SHA384,
	config.TLS_CHACHA20_POLY1305_SHA256:          ciphersuite.TLS_CHACHA20_POLY1305_SHA256,
	config.TLS_PSK_WITH_AES_128_CCM_8:            ciphersuite.TLS_PSK_WITH_AES_128_CCM_8,
	config.TLS_PSK_WITH_AES_128_CCM:              ciphersuite.TLS_PSK_WITH_AES_128_CCM,
	config.TLS_PSK_WITH_AES_128_GCM_SHA256:       ciphersuite.TLS_PSK_WITH_AES_128_GCM_SHA256,
	config.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256: ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
}

// gatewayConfig translates a validated configuration file into a
// gateway.Config; config never imports gateway, so the mapping lives here.
func gatewayConfig(c *config.Config, store gateway.KeyStore, tagger *pskstore.Tagger, log *zap.Logger) gateway.Config {
	gc := gateway.Config{
		Store:                 store,
		Backends:              map[string]string{},
		DefaultBackend:        c.DefaultBackend,
		MTU:                   c.DTLS.MTU,
		HandshakeTimeout:      time.Duration(c.DTLS.HandshakeTimeout),
		IdleTimeout:           time.Duration(c.Sessions.IdleTimeout),
		AllowParallelSessions: !c.Sessions.OnePerIdentity,
		Logger:                log,
		IdentityTag:           tagger.Tag,
		LogIdentities:         c.Log.Identities == config.IdentitiesClear,
		CIDLength:             c.DTLS.ConnectionIDLength,
		BootstrapBackend:      c.BootstrapBackend,
		ServerNameBackends:    c.ServerNameBackends,
		RegistrationGrace:     time.Duration(c.Sessions.RegistrationGrace),
		RegisterInterval:      time.Duration(c.Limits.RegisterInterval),
		MaxSessions:           c.Limits.MaxSessions,
		MaxEmbryonic:          c.Limits.MaxEmbryonic,
		HandshakeRate:         c.Limits.HandshakeRate,
		HandshakeBurst:        c.Limits.HandshakeBurst,
		MaxDatagram:           c.Limits.MaxDatagram,
	}
	if lt := time.Duration(c.Store.LookupTimeout); c.Store.Type == config.StorePostgres && lt+lookupMargin > 2*time.Second {
		// The store bounds its lookups itself (store.lookup_timeout); the
		// gateway's own bound (2s by default) must not cut them shorter.
		gc.LookupTimeout = lt + lookupMargin
	}
	if gc.HandshakeRate == 0 {
		gc.HandshakeRate = -1 // config: 0 means unlimited; gateway: 0 means the default
	}
	if gc.CIDLength == 0 {
		gc.CIDLength = -1 // config: 0 disables; gateway: 0 means the default
	}
	if c.Sessions.DataPlane == config.DataPlanePion {
		gc.DataPlane = gateway.DataPlanePion
	}
	for _, l := range c.Listeners {
		policy := gateway.SNIAllow
		if l.MissingSNI == config.SNIRequire {
			policy = gateway.SNIRequire
		}
		gc.Listeners = append(gc.Listeners, gateway.Listener{Address: l.Address, MissingSNI: policy, Backend: l.Backend})
	}
	for name, b := range c.Backends {
		gc.Backends[name] = b.Address
	}
	for _, v := range c.DTLS.Versions {
		switch v {
		case config.DTLS12:
			gc.Versions |= pskstore.DTLS12
		case config.DTLS13:
			gc.Versions |= pskstore.DTLS13
		}
	}
	for _, g := range c.DTLS.Groups {
		gc.Groups = append(gc.Groups, groupIDs[g])
	}
	for _, s := range c.DTLS.CipherSuites {
		gc.CipherSuites = append(gc.CipherSuites, suiteIDs[s])
	}
	return gc
}

// countKeys returns how many keys store holds, for check-config.
func countKeys(store gateway.KeyStore) (int64, error) {
	switch s := store.(type) {
	case interface {
		Count(context.Context) (int64, error)
	}:
		ctx, cancel := context.WithTimeout(context.Background(), postgresOpenTimeout)
		defer cancel()
		return s.Count(ctx)
	}
	return 0, nil
}

// closeStore releases what store holds (a PostgreSQL store's connections).
func closeStore(store gateway.KeyStore) {
	if c, ok := store.(io.Closer); ok {
		_ = c.Close()
	}
}
