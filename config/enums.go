package config

// SNIPolicy is the policy for a ClientHello without server_name (R5).
type SNIPolicy string

// SNI policies.
const (
	// SNIAllow accepts a ClientHello without SNI; the identity's binding is
	// then checked against no name.
	SNIAllow SNIPolicy = "allow"
	// SNIRequire aborts a handshake whose ClientHello carries no SNI.
	SNIRequire SNIPolicy = "require"
)

// DataPlane names who protects established sessions' records.
type DataPlane string

// Data planes.
const (
	// DataPlaneLean is the gateway's own record layer (default).
	DataPlaneLean DataPlane = "lean"
	// DataPlanePion keeps pion's connection for the life of a session.
	DataPlanePion DataPlane = "pion"
)

// StoreType selects the PSK store backend.
type StoreType string

// Store types.
const (
	// StoreFile reads keys from the YAML key file at Store.Path.
	StoreFile StoreType = "file"
	// StoreMemory starts empty; for demos and tests only.
	StoreMemory StoreType = "memory"
	// StorePostgres keeps keys in PostgreSQL (Store.DSN or Store.DSNEnv),
	// shared by every replica; revocations reach all of them (R10).
	StorePostgres StoreType = "postgres"
)

// Version is a DTLS protocol version.
type Version string

// DTLS versions.
const (
	DTLS12 Version = "1.2" // RFC 6347
	DTLS13 Version = "1.3" // RFC 9147
)

// Group is a DTLS 1.3 (EC)DHE key-exchange group.
type Group string

// Key-exchange groups.
const (
	GroupX25519         Group = "x25519"
	GroupX25519MLKEM768 Group = "x25519mlkem768" // hybrid post-quantum
	GroupP256           Group = "p256"
	GroupP384           Group = "p384"
)

// CipherSuite is a cipher suite by its IANA name.
type CipherSuite string

// Supported cipher suites. The TLS_AES_* and TLS_CHACHA20_* suites are
// DTLS 1.3's; the TLS_PSK_* and TLS_ECDHE_PSK_* suites are DTLS 1.2's.
const (
	TLS_AES_128_GCM_SHA256                CipherSuite = "TLS_AES_128_GCM_SHA256"
	TLS_AES_256_GCM_SHA384                CipherSuite = "TLS_AES_256_GCM_SHA384"
	TLS_CHACHA20_POLY1305_SHA256          CipherSuite = "TLS_CHACHA20_POLY1305_SHA256"
	TLS_PSK_WITH_AES_128_CCM_8            CipherSuite = "TLS_PSK_WITH_AES_128_CCM_8" // RFC 7925 mandatory
	TLS_PSK_WITH_AES_128_CCM              CipherSuite = "TLS_PSK_WITH_AES_128_CCM"
	TLS_PSK_WITH_AES_128_GCM_SHA256       CipherSuite = "TLS_PSK_WITH_AES_128_GCM_SHA256"
	TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256 CipherSuite = "TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256"
)

// CipherSuites returns every supported cipher suite, DTLS 1.3 suites first.
func CipherSuites() []CipherSuite {
	return []CipherSuite{
		TLS_AES_128_GCM_SHA256,
		TLS_AES_256_GCM_SHA384,
		TLS_CHACHA20_POLY1305_SHA256,
		TLS_PSK_WITH_AES_128_CCM_8,
		TLS_PSK_WITH_AES_128_CCM,
		TLS_PSK_WITH_AES_128_GCM_SHA256,
		TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
	}
}

// Version returns the DTLS version the suite belongs to, or "" for an
// unsupported suite.
func (s CipherSuite) Version() Version {
	switch s {
	case TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256:
		return DTLS13
	case TLS_PSK_WITH_AES_128_CCM_8, TLS_PSK_WITH_AES_128_CCM,
		TLS_PSK_WITH_AES_128_GCM_SHA256, TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256:
		return DTLS12
	}
	return ""
}

// Level is a log level.
type Level string

// Log levels.
const (
	LevelDebug Level = "debug"
	LevelInfo  Level = "info"
	LevelWarn  Level = "warn"
	LevelError Level = "error"
)

// Format is the encoding of log lines.
type Format string

// Log formats.
const (
	FormatJSON    Format = "json"
	FormatConsole Format = "console"
)

// IdentityLogging says how PSK identities appear in logs (R9).
type IdentityLogging string

// Identity logging modes.
const (
	// IdentitiesTag logs only a keyed tag of each identity.
	IdentitiesTag IdentityLogging = "tag"
	// IdentitiesClear logs raw identities; an explicit operator opt-in.
	IdentitiesClear IdentityLogging = "clear"
)
