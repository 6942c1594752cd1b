// Package config owns the typed configuration of the gateway: the YAML file
// format, its defaults and its validation with precise, line-numbered errors.
//
// It parses and checks; it does no I/O beyond reading the file in Load (it
// neither opens the key store nor binds sockets) and imports nothing of this
// module. The command (cmd/gateway) turns a Config into the gateway.Config,
// pskstore and logger it wires together.
//
// The zero value of a string choice or a list means its default; numbers and
// durations are taken literally, so Parse starts from Default and an omitted
// field keeps its default while an explicit 0 or false stays 0 or false.
package config

import (
	"slices"
	"time"
)

// Config is the whole gateway configuration. Build one with Default, Parse or
// Load; a Config from Parse or Load has its defaults filled in and is valid.
type Config struct {
	// Listeners are the UDP sockets the gateway accepts DTLS on.
	// Empty means the default: one listener on ":5684".
	Listeners []Listener `yaml:"listeners"`

	// Backends maps a backend name to the LwM2M server it designates.
	// Required: at least one. A name is 1..63 letters, digits, '-' or '_';
	// store entries refer to backends by these names.
	Backends map[string]Backend `yaml:"backends"`

	// DefaultBackend names the backend for identities that name none.
	// Empty means the only backend when exactly one is declared (Parse fills
	// it in); with several backends it is required. It must name a declared
	// backend.
	DefaultBackend string `yaml:"default_backend"`

	// BootstrapBackend names the LwM2M bootstrap server: Bootstrap-Requests
	// (POST /bs) go there, everything else to the identity's backend. Empty
	// (default): bootstrap goes to the identity's backend too.
	BootstrapBackend string `yaml:"bootstrap_backend"`

	// ServerNameBackends routes identities whose key names no backend by the
	// server name (SNI) of their handshake: server name -> backend name,
	// compared case-insensitively. Empty (default): no SNI routing.
	ServerNameBackends map[string]string `yaml:"server_name_backends"`

	// Store says where PSK identities and keys come from.
	Store Store `yaml:"store"`

	// DTLS tunes the handshake and record layer.
	DTLS DTLS `yaml:"dtls"`

	// Sessions tunes the lifetime of DTLS sessions.
	Sessions Sessions `yaml:"sessions"`

	// Log tunes logging.
	Log Log `yaml:"log"`

	// Limits are the admission limits against floods.
	Limits Limits `yaml:"limits"`

	// Admin is the HTTP listener for metrics, health and the registrations view.
	Admin Admin `yaml:"admin"`

	// Cluster makes this gateway one of several replicas sharing the
	// PostgreSQL store and its sessions.
	Cluster Cluster `yaml:"cluster"`

	// Upstream tunes the sockets towards the LwM2M servers.
	Upstream Upstream `yaml:"upstream"`
}

// Upstream tunes the gateway's sockets towards the backends: one per device
// and backend, so the server sees one address per device.
type Upstream struct {
	// SourceAddresses are the local IP addresses upstream sockets bind to,
	// one chosen per device: each holds one UDP port per device and
	// backend, about 28,000 with Linux's default ephemeral port range
	// (net.ipv4.ip_local_port_range), so N addresses serve N x 28,000
	// devices per backend. IPv6 addresses are welcome. Empty (default): the
	// kernel chooses (one address).
	SourceAddresses []string `yaml:"source_addresses"`
}

// Cluster joins replicas behind an L4 UDP load balancer: the Connection
// IDs a replica issues name it, a record that reaches another replica is
// relayed to its owner over the replicas' link, and the sessions of a
// replica whose lease ran out are taken over without a handshake. Needs
// store.type postgres, sessions.snapshot postgres, a KEK and Connection IDs
// (dtls.connection_id_length >= 2).
type Cluster struct {
	// Enabled turns replication on. Default false (a single gateway).
	Enabled bool `yaml:"enabled"`

	// ReplicaID is this replica's id, 0..255, stable across its restarts
	// and unique among the replicas. -1 (default): the trailing number of
	// the host name (pod gateway-2 of a StatefulSet is replica 2).
	ReplicaID int `yaml:"replica_id"`

	// LinkAddress is the UDP address the replicas' link binds. Default
	// ":5685".
	LinkAddress string `yaml:"link_address"`

	// LinkAdvertise is the host:port other replicas reach this one's link
	// at. Empty (default): the IP in the environment variable POD_IP (set
	// it from the pod's status.podIP) with LinkAddress's port, else
	// LinkAddress.
	LinkAdvertise string `yaml:"link_advertise"`

	// Lease is how long a replica's sessions stay its own without a
	// renewal in the store (renewed every third of it). A replica that
	// cannot renew stops serving them before the lease runs out. > 0.
	// Default 15s.
	Lease Duration `yaml:"lease"`
}

// Limits bound what one source or the whole internet can cost the gateway.
type Limits struct {
	// MaxSessions caps live sessions; further ClientHellos are dropped and
	// counted. Default 200000; must be > 0.
	MaxSessions int `yaml:"max_sessions"`
	// MaxEmbryonic caps handshakes whose cookie has not been answered (a
	// spoofed source never answers it), whatever number of datagrams they
	// have seen; oldest evicted first. Half is for new addresses, a
	// quarter each for returning devices and for retransmissions of shed
	// ClientHellos. Default 2048; must be > 0.
	MaxEmbryonic int `yaml:"max_embryonic"`
	// MaxHandshakes caps handshakes in progress, embryonic or not (each
	// costs a DTLS stack connection and its goroutines); a quarter is kept
	// for returning devices and retransmissions. Default 4096; must be > 0.
	MaxHandshakes int `yaml:"max_handshakes"`
	// HandshakeRate is the sustained rate of new sessions per source IP, per
	// second. Default 200 (a carrier-grade NAT puts many devices behind one
	// address); 0 means unlimited.
	HandshakeRate float64 `yaml:"handshake_rate"`
	// HandshakeBurst is the per-IP burst of new sessions. 0 (default) means
	// twice HandshakeRate.
	HandshakeBurst int `yaml:"handshake_burst"`
	// PrefixHandshakeRate is the sustained rate of new sessions per source
	// prefix (PrefixLengthIPv4, PrefixLengthIPv6), per second: a flood
	// from one network cannot take every handshake. Default 500; 0 means
	// unlimited.
	PrefixHandshakeRate float64 `yaml:"prefix_handshake_rate"`
	// PrefixHandshakeBurst is the per-prefix burst. 0 (default) means twice
	// PrefixHandshakeRate.
	PrefixHandshakeBurst int `yaml:"prefix_handshake_burst"`
	// PrefixLengthIPv4 is the IPv4 prefix length PrefixHandshakeRate
	// counts, 1..32. Default 24.
	PrefixLengthIPv4 int `yaml:"prefix_length_ipv4"`
	// PrefixLengthIPv6 is the IPv6 prefix length PrefixHandshakeRate
	// counts, 1..128. Default 64.
	PrefixLengthIPv6 int `yaml:"prefix_length_ipv6"`
	// NewHandshakeRate is how many ClientHellos per second, over all
	// sources, may start a handshake in each admission class: addresses
	// never seen, retransmissions of shed hellos, and addresses that
	// completed a handshake within RecentHandshakeWindow. Beyond it hellos
	// are shed at random and counted: a spoofed flood costs at most this
	// many DTLS connections a second per class. Default 1000; 0 means
	// unlimited.
	NewHandshakeRate float64 `yaml:"new_handshake_rate"`
	// RecentHandshakeWindow is how long an address that completed a
	// handshake keeps priority for new ones (reboots, re-handshakes).
	// Default 24h; > 0.
	RecentHandshakeWindow Duration `yaml:"recent_handshake_window"`
	// MaxRecentAddresses bounds the addresses remembered for
	// RecentHandshakeWindow; past it the oldest half is forgotten. Default
	// 65536; > 0.
	MaxRecentAddresses int `yaml:"max_recent_addresses"`
	// RegisterInterval is the sustained rate of Register/Bootstrap-Request
	// per session after a burst of 5; more get 4.29. Default 10s; > 0.
	RegisterInterval Duration `yaml:"register_interval"`
	// MaxDatagram is the largest datagram accepted, in bytes, 1280..65535.
	// Default 18432 (a maximal DTLS record).
	MaxDatagram int `yaml:"max_datagram"`
}

// Admin is the gateway's HTTP listener: /metrics (Prometheus), /healthz,
// /readyz, /registrations and, when enabled, /debug/pprof.
type Admin struct {
	// Address is the TCP host:port to listen on. Default "127.0.0.1:9090";
	// ":9090" in a container so probes and Prometheus reach it. Empty
	// string: no admin listener.
	Address string `yaml:"address"`
	// Pprof serves /debug/pprof on the admin listener. Default false.
	Pprof bool `yaml:"pprof"`
}

// Listener is one UDP socket the gateway accepts DTLS handshakes on.
type Listener struct {
	// Address is the UDP host:port to bind, IPv4 or IPv6 ("[::1]:5684").
	// An empty host binds every interface; port 0 picks an ephemeral port
	// (for tests). Required.
	Address string `yaml:"address"`

	// MissingSNI is the policy for a ClientHello without server_name
	// (RFC 9257, rule R5). Empty means SNIAllow.
	MissingSNI SNIPolicy `yaml:"missing_sni"`

	// Backend serves identities that name no backend (and match no
	// server_name_backends entry) on this listener. Empty (default):
	// default_backend.
	Backend string `yaml:"backend"`
}

// Backend is an LwM2M server the gateway forwards device traffic to.
type Backend struct {
	// Address is the UDP host:port of the server; the host is an IP address
	// or a DNS name. Required; port 1..65535.
	Address string `yaml:"address"`
}

// Store says where PSK identities and keys come from.
type Store struct {
	// Type is StoreFile, StoreMemory or StorePostgres. Empty means
	// StoreFile.
	Type StoreType `yaml:"type"`

	// Path is the key file of a StoreFile store; ignored by the others.
	// Default "keys.yaml"; empty is invalid for a file store. Load resolves a
	// relative path against the directory of the configuration file.
	Path string `yaml:"path"`

	// DSN locates the database of a StorePostgres store, as a URL
	// ("postgres://gateway@db.example.com:5432/gateway?sslmode=verify-full")
	// or key=value pairs ("host=/run/postgresql dbname=gateway"). Exactly
	// one of DSN and DSNEnv for a postgres store, neither for the others.
	// A DSN may hold a password, and this file is rarely treated as a
	// secret: prefer DSNEnv. Errors never show the password.
	DSN string `yaml:"dsn"`

	// DSNEnv names the environment variable holding the DSN of a
	// StorePostgres store (for a Kubernetes Secret mapped into the
	// environment); the recommended way. Empty means none.
	DSNEnv string `yaml:"dsn_env"`

	// LookupTimeout bounds one key lookup of a StorePostgres store,
	// connecting included: a handshake fails this fast, like one with an
	// unknown identity, when the database does not answer. Must be > 0.
	// Default 500ms; ignored by the other stores.
	LookupTimeout Duration `yaml:"lookup_timeout"`

	// TagKeyFile is a file holding the secret that keys identity tags in logs
	// (R9), so tags are stable across restarts and replicas. Empty means the
	// tag key kept with the store (cmd/gateway: tag.key next to a key file,
	// generated on first use; the database's for postgres), or for a memory
	// store a random secret per process. Load resolves a relative path like
	// Path.
	TagKeyFile string `yaml:"tag_key_file"`

	// KEKFile is a file holding the key-encryption key that seals the keys
	// of a file or postgres store at rest (pskstore/sealed, AES-256-GCM):
	// 32 raw bytes, 64 hex digits or base64. Empty means none. At most one
	// of KEKFile and KEKEnv; not for a memory store. Load resolves a
	// relative path like Path.
	KEKFile string `yaml:"kek_file"`

	// KEKEnv names the environment variable holding the key-encryption key
	// in hex or base64, as an alternative to KEKFile (for a Kubernetes
	// Secret mapped into the environment). Empty means none.
	KEKEnv string `yaml:"kek_env"`

	// InsecurePlaintextKeys accepts plaintext keys in a file or postgres
	// store that has a KEK, during a migration to sealed keys. Default
	// false: with a KEK, a plaintext key refuses the whole store. Needs
	// KEKFile or KEKEnv.
	InsecurePlaintextKeys bool `yaml:"insecure_plaintext_keys"`
}

// HasKEK reports whether the store has a key-encryption key configured.
func (s Store) HasKEK() bool { return s.KEKFile != "" || s.KEKEnv != "" }

// DTLS tunes the handshake and record layer.
type DTLS struct {
	// Versions are the DTLS versions accepted, each DTLS12 or DTLS13, no
	// duplicates. Empty means both.
	Versions []Version `yaml:"versions"`

	// Groups are the (EC)DHE groups of DTLS 1.3 psk_dhe_ke and of DTLS 1.2
	// ECDHE-PSK (R3), in order of preference, no duplicates. Empty means
	// [GroupX25519, GroupP256]: P-256 is what RFC 7925 devices implement,
	// and DTLS 1.2 ECDHE-PSK clients older than wolfSSL 5.7 cannot use
	// X25519 at all.
	Groups []Group `yaml:"groups"`

	// CipherSuites restricts the cipher suites, by IANA name (see
	// CipherSuites for the supported list), no duplicates. Each enabled
	// version needs at least one of its suites. Empty means all supported.
	CipherSuites []CipherSuite `yaml:"cipher_suites"`

	// ConnectionIDLength is the length in bytes of the Connection IDs the
	// gateway issues (RFC 9146, RFC 9147 §9), 0..32. 0 disables Connection
	// IDs. Default 8.
	ConnectionIDLength int `yaml:"connection_id_length"`

	// MTU is the largest datagram the gateway sends, in bytes, 256..9000.
	// Default 1200 (fits the IPv6 minimum MTU with room for tunnels).
	MTU int `yaml:"mtu"`

	// HandshakeTimeout bounds a handshake from the first ClientHello to
	// Finished; must be > 0. Default 10s.
	HandshakeTimeout Duration `yaml:"handshake_timeout"`

	// MaxIdentityLength is the longest PSK identity accepted, in bytes,
	// 1..65535 (R7). Default 128.
	MaxIdentityLength int `yaml:"max_identity_length"`
}

// Sessions tunes the lifetime of DTLS sessions.
type Sessions struct {
	// IdleTimeout closes a session after this long without traffic in either
	// direction; must be > 0. Default 75m, longer than the one-hour LwM2M
	// registration lifetime so queue-mode devices keep their session.
	IdleTimeout Duration `yaml:"idle_timeout"`

	// OnePerIdentity makes a new handshake for an identity replace that
	// identity's old session. Default true; an explicit false keeps both.
	OnePerIdentity bool `yaml:"one_per_identity"`

	// DrainTimeout bounds graceful shutdown: sessions still open after it are
	// closed. Must be >= 0; 0 closes them at once. Default 5s.
	DrainTimeout Duration `yaml:"drain_timeout"`

	// RegistrationGrace is added to a registered device's LwM2M lifetime to
	// get its idle limit when that exceeds IdleTimeout. Default 2m; > 0.
	RegistrationGrace Duration `yaml:"registration_grace"`

	// DataPlane chooses who protects established sessions' records:
	// DataPlaneLean (default) hands each session over from pion to the
	// gateway's own record layer after its handshake (a few hundred bytes
	// and no goroutine per session); DataPlanePion keeps pion's connection
	// for the life of the session (the previous data path, kept as a
	// fallback for one release).
	DataPlane DataPlane `yaml:"data_plane"`

	// EventLoops is how many event loops carry the lean data plane on
	// Linux: each reads its own socket of every listener (the address
	// bound that many times with SO_REUSEPORT; the kernel spreads devices
	// over them by source address and port) and the upstream sockets of
	// the sessions it started. One loop uses up to one core: set it to the
	// cores the data plane may use. 1 to 256; default 1.
	EventLoops int `yaml:"event_loops"`

	// Snapshot keeps established sessions across restarts: a file path
	// (sealed snapshots written every checkpoint_interval and at SIGTERM,
	// restored at start), or SnapshotPostgres for the PostgreSQL store
	// replicas share. Sessions are sealed with the store's KEK, so a KEK
	// (store.kek_file or store.kek_env) is required; needs the lean data
	// plane. Empty (default): sessions end with the process, SIGTERM sends
	// close_notify. A relative path is relative to the configuration file.
	Snapshot string `yaml:"snapshot"`

	// CheckpointInterval is how often changed sessions are snapshotted; a
	// crash lets a session's records received since its last checkpoint be
	// replayed once to the restored session. > 0. Default 10s.
	CheckpointInterval Duration `yaml:"checkpoint_interval"`

	// ParkAfter is obsolete and ignored: the lean data plane holds an idle
	// session in a few hundred bytes, so sessions are no longer parked. It
	// is still accepted so that existing configuration files load;
	// Deprecated reports it.
	ParkAfter Duration `yaml:"park_after"`
}

// Log tunes logging.
type Log struct {
	// Level is the minimum level logged. Empty means LevelInfo.
	Level Level `yaml:"level"`

	// Format is the encoding of log lines. Empty means FormatJSON.
	Format Format `yaml:"format"`

	// Identities says how PSK identities appear in logs (R9). Empty means
	// IdentitiesTag; IdentitiesClear is an explicit operator opt-in.
	Identities IdentityLogging `yaml:"identities"`

	// FlushInterval is how long a log line may wait in the logger's buffer
	// (256 KiB) before it is written; errors are written at once. One
	// write per line was a measurable part of a handshake's CPU
	// (bench/BENCHMARKS.md), and a reconnect storm logs a line per
	// session. 0 writes every line at once; default
	// DefaultLogFlushInterval.
	FlushInterval Duration `yaml:"flush_interval"`
}

// Defaults of the fields whose zero value is meaningful or invalid.
const (
	DefaultLogFlushInterval   = Duration(time.Second)
	DefaultListenAddress      = ":5684"
	DefaultStorePath          = "keys.yaml"
	DefaultLookupTimeout      = Duration(500 * time.Millisecond)
	DefaultConnectionIDLength = 8
	DefaultMTU                = 1200
	DefaultHandshakeTimeout   = Duration(10 * time.Second)
	DefaultMaxIdentityLength  = 128
	DefaultIdleTimeout        = Duration(75 * time.Minute)
	DefaultDrainTimeout       = Duration(5 * time.Second)
	DefaultRegistrationGrace  = Duration(2 * time.Minute)
	DefaultCheckpointInterval = Duration(10 * time.Second)
	DefaultLinkAddress        = ":5685"
	DefaultLease              = Duration(15 * time.Second)

	// SnapshotPostgres as sessions.snapshot keeps snapshots in the
	// PostgreSQL key store's database.
	SnapshotPostgres        = "postgres"
	DefaultRegisterInterval = Duration(10 * time.Second)
	DefaultMaxSessions      = 200000
	DefaultMaxEmbryonic     = 2048
	DefaultHandshakeRate    = 200
	DefaultMaxDatagram      = 18432
	DefaultAdminAddress     = "127.0.0.1:9090"
)

// Defaults of the limits against ClientHello floods (issue 12).
const (
	DefaultMaxHandshakes    = 4096
	DefaultPrefixRate       = 500
	DefaultPrefixLengthIPv4 = 24
	DefaultPrefixLengthIPv6 = 64
	DefaultNewHandshakeRate = 1000
	DefaultRecentWindow     = Duration(24 * time.Hour)
	DefaultMaxRecent        = 65536
)

// Default returns a Config with every default filled in and no backends; it
// does not validate until at least one backend is added. Each call returns a
// fresh value the caller may modify.
func Default() *Config {
	return &Config{
		Listeners: []Listener{{Address: DefaultListenAddress, MissingSNI: SNIAllow}},
		Store:     Store{Type: StoreFile, Path: DefaultStorePath, LookupTimeout: DefaultLookupTimeout},
		DTLS: DTLS{
			Versions:           []Version{DTLS12, DTLS13},
			Groups:             []Group{GroupX25519, GroupP256},
			ConnectionIDLength: DefaultConnectionIDLength,
			MTU:                DefaultMTU,
			HandshakeTimeout:   DefaultHandshakeTimeout,
			MaxIdentityLength:  DefaultMaxIdentityLength,
		},
		Sessions: Sessions{
			IdleTimeout:        DefaultIdleTimeout,
			OnePerIdentity:     true,
			DrainTimeout:       DefaultDrainTimeout,
			RegistrationGrace:  DefaultRegistrationGrace,
			DataPlane:          DataPlaneLean,
			EventLoops:         1,
			CheckpointInterval: DefaultCheckpointInterval,
		},
		Cluster: Cluster{ReplicaID: -1, LinkAddress: DefaultLinkAddress, Lease: DefaultLease},
		Limits: Limits{
			MaxSessions:           DefaultMaxSessions,
			MaxEmbryonic:          DefaultMaxEmbryonic,
			HandshakeRate:         DefaultHandshakeRate,
			MaxHandshakes:         DefaultMaxHandshakes,
			PrefixHandshakeRate:   DefaultPrefixRate,
			PrefixLengthIPv4:      DefaultPrefixLengthIPv4,
			PrefixLengthIPv6:      DefaultPrefixLengthIPv6,
			NewHandshakeRate:      DefaultNewHandshakeRate,
			RecentHandshakeWindow: DefaultRecentWindow,
			MaxRecentAddresses:    DefaultMaxRecent,
			RegisterInterval:      DefaultRegisterInterval,
			MaxDatagram:           DefaultMaxDatagram,
		},
		Admin: Admin{Address: DefaultAdminAddress},
		Log:   Log{Level: LevelInfo, Format: FormatJSON, Identities: IdentitiesTag, FlushInterval: DefaultLogFlushInterval},
	}
}

// BackendNames returns the names of the declared backends, sorted.
func (c *Config) BackendNames() []string {
	names := make([]string, 0, len(c.Backends))
	for name := range c.Backends {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Deprecated lists the obsolete settings the configuration sets, each with
// what to do about it; they are accepted so that old files still load.
func (c *Config) Deprecated() []string {
	var out []string
	if c.Sessions.ParkAfter != 0 {
		out = append(out, "sessions.park_after is obsolete and ignored: the lean data plane keeps an idle session in a few hundred bytes; remove the setting")
	}
	return out
}

// applyDefaults replaces the zero values that mean a default by that default
// and fills in DefaultBackend when exactly one backend is declared. Numbers
// and durations are left alone: Parse starts from Default for them.
func (c *Config) applyDefaults() {
	d := Default()
	if len(c.Listeners) == 0 {
		c.Listeners = d.Listeners
	}
	for i := range c.Listeners {
		if c.Listeners[i].MissingSNI == "" {
			c.Listeners[i].MissingSNI = SNIAllow
		}
	}
	if len(c.Backends) == 0 {
		c.Backends = nil
	}
	if len(c.Upstream.SourceAddresses) == 0 {
		c.Upstream.SourceAddresses = nil
	}
	if c.Sessions.DataPlane == "" {
		c.Sessions.DataPlane = DataPlaneLean
	}
	if len(c.ServerNameBackends) == 0 {
		c.ServerNameBackends = nil
	}
	if c.DefaultBackend == "" && len(c.Backends) == 1 {
		for name := range c.Backends {
			c.DefaultBackend = name
		}
	}
	if c.Store.Type == "" {
		c.Store.Type = StoreFile
	}
	if len(c.DTLS.Versions) == 0 {
		c.DTLS.Versions = d.DTLS.Versions
	}
	if len(c.DTLS.Groups) == 0 {
		c.DTLS.Groups = d.DTLS.Groups
	}
	if len(c.DTLS.CipherSuites) == 0 {
		c.DTLS.CipherSuites = nil
	}
	if c.Log.Level == "" {
		c.Log.Level = LevelInfo
	}
	if c.Log.Format == "" {
		c.Log.Format = FormatJSON
	}
	if c.Log.Identities == "" {
		c.Log.Identities = IdentitiesTag
	}
}
