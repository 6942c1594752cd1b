// Package file is the default pskstore backend: keys in one YAML file,
// loaded at Open, re-read atomically by Reload or on change (WatchFile), and
// written by Save or by the Store's key administration (Put, Delete,
// Rotate, Replace, Rekey: read-modify-write under a lock, admin.go). Every
// load enforces the RFC 9257 policy of package pskstore (R1–R8), every
// write pskstore.CheckAdd, and every error names the entry by index, line
// and field, never the key or the raw identity (R9).
//
// The format:
//
//	keys:
//	  - identity: "device-0001"        # UTF-8 text identity, or:
//	    # identity_hex: "00a1ff"       # binary identity
//	    key_hex: "…"                   # or key_base64: "…", or key_sealed: "…" (exactly one of the three)
//	    hash: sha256                   # sha256 (default) | sha384
//	    endpoint: "urn:dev:0001"       # LwM2M endpoint name bound to the identity (L1)
//	    server_name: "gw.example.com"  # SNI bound to the identity (R5); optional
//	    backend: dm                    # backend name; optional
//	    versions: ["1.3", "1.2"]       # default both
//	    modes: [psk_dhe_ke]            # DTLS 1.3 modes; default [psk_dhe_ke]; psk_ke only if listed (R3)
//	    legacy: false                  # allow DTLS 1.2 plain-PSK suites (R3)
//	    allow_low_entropy: false       # accept a key failing the entropy screen (R2)
//	    group: false                   # a PSK knowingly shared by a group (R4)
//	    import_context_hex: "…"        # RFC 9258 importer context; required for group keys (R4, R6)
//
// # Keys sealed at rest
//
// With WithKEK, keys are encrypted at rest under a key-encryption key
// (package sealed: AES-256-GCM, the identity as associated data):
//
//	keys:
//	  - identity: "device-0001"
//	    key_sealed: "AT+2…"            # base64 of a sealed.KEK.Seal value
//
// Save and Marshal then write key_sealed for every key, and loading refuses
// plaintext keys (key_hex, key_base64, ErrPlaintextKey) unless
// WithInsecurePlaintextKeys(true) is also given, which is meant for a
// migration only. The choice is an Option, not a field of the key file, so
// whoever can edit the key file cannot also turn off the requirement. A
// sealed entry without a KEK is refused (ErrNoKEK); a value sealed under
// another KEK (sealed.ErrWrongKEK) or altered, or copied from another
// identity (sealed.ErrCorrupt) is refused naming the entry, line and the KEK
// ids, never the key.
//
// Unknown fields are refused. Identities are compared byte by byte (R7), at
// most pskstore.DefaultMaxIdentityLen bytes unless WithPolicy says otherwise.
// An empty file is refused: "keys: []" is how to write a store without keys.
//
// The package does not own the gateway's configuration file or key
// generation; a CLI combines pskstore.GenerateSecret and Put.
package file

import (
	"time"

	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// Option configures Open, Parse, Marshal and Save.
type Option func(*options)

type options struct {
	policy   pskstore.Options
	logger   *zap.Logger
	debounce time.Duration
	kek      *sealed.KEK
	// plaintext accepts key_hex and key_base64 although kek is set.
	plaintext bool
	// create opens a missing file as an empty store.
	create bool
}

func newOptions(opts []Option) options {
	o := options{logger: zap.NewNop(), debounce: 100 * time.Millisecond}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithPolicy sets the policy options (maximum identity length, identity
// tagger, fingerprinter). The zero value is the default; a nil Fingerprinter
// is replaced by a random per-store one.
func WithPolicy(p pskstore.Options) Option { return func(o *options) { o.policy = p } }

// WithLogger sets the logger of load warnings (SHOULD findings, file
// permissions) and, unless WatchFile is given its own, of reloads. Nil means
// no logging, the default. Identities appear only as keyed tags (R9).
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l == nil {
			l = zap.NewNop()
		}
		o.logger = l
	}
}

// WithDebounce sets how long WatchFile waits after the last file event
// before it reloads, so an editor's burst of writes triggers one reload.
// Default 100 ms; zero or negative means the default.
func WithDebounce(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.debounce = d
		}
	}
}

// WithKEK seals keys at rest under kek: Save and Marshal write key_sealed,
// and Open, Parse and Reload open key_sealed entries and refuse plaintext
// keys unless WithInsecurePlaintextKeys(true) is given. Nil, the default,
// means no KEK: keys are written as key_hex and sealed entries are refused.
func WithKEK(kek *sealed.KEK) Option { return func(o *options) { o.kek = kek } }

// WithInsecurePlaintextKeys(true) accepts plaintext keys (key_hex,
// key_base64) when loading a store that has a KEK, for a migration to sealed
// keys; Save still seals every key. Without a KEK it has no effect: plaintext
// is then the only form.
func WithInsecurePlaintextKeys(allow bool) Option { return func(o *options) { o.plaintext = allow } }

// WithCreate(true) lets Open take a missing file for an empty store, which
// its first write creates (mode 0600); for the tools that provision a new
// store. Default false: a missing key file is an error, so a gateway given
// a wrong path does not start without keys.
func WithCreate(create bool) Option { return func(o *options) { o.create = create } }
