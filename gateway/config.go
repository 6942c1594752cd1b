package gateway

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// KeyStore is what the gateway needs from a PSK store: one lookup on the
// handshake path. pskstore backends implement it; if a store also implements
// pskstore.Watcher, revocations and rotations close live sessions (R10).
type KeyStore interface {
	Lookup(ctx context.Context, identity []byte) (pskstore.Key, error)
}

// maxEventLoops bounds Config.EventLoops: more loops than cores only add
// sockets and wake-ups.
const maxEventLoops = 256

// DataPlane names who protects an established session's records.
type DataPlane uint8

const (
	// DataPlaneLean hands sessions over to the gateway's own record layer.
	DataPlaneLean DataPlane = iota
	// DataPlanePion keeps pion's Conn for the life of a session.
	DataPlanePion
)

func (d DataPlane) String() string {
	if d == DataPlanePion {
		return "pion"
	}
	return "lean"
}

// SNIPolicy says what a listener does with a ClientHello without
// server_name (R5).
type SNIPolicy uint8

const (
	// SNIAllow accepts a missing server_name; a present but different one is
	// still refused.
	SNIAllow SNIPolicy = iota
	// SNIRequire refuses every handshake without server_name, whatever
	// the identity.
	SNIRequire
)

// Listener is one UDP address the gateway serves.
type Listener struct {
	// Address is a UDP host:port ("127.0.0.1:0" picks a free port).
	Address string
	// MissingSNI is the policy for ClientHellos without server_name (R5).
	// Zero value: SNIAllow.
	MissingSNI SNIPolicy
	// Backend serves identities that name no backend and whose server name
	// is not in Config.ServerNameBackends, on this listener. Empty:
	// Config.DefaultBackend.
	Backend string
}

// DefaultCipherSuites returns the suites served when Config.CipherSuites is
// nil, a fresh slice each call (like crypto/tls.CipherSuites):
// the three DTLS 1.3 suites and the RFC 7925 DTLS 1.2 PSK suites, CCM_8 being
// the IoT mandatory one. Plain-PSK DTLS 1.2 suites are only granted to keys
// marked Legacy (R3); TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256 gives DTLS 1.2
// forward secrecy.
func DefaultCipherSuites() []ciphersuite.ID {
	return []ciphersuite.ID{
		ciphersuite.TLS_AES_128_GCM_SHA256,
		ciphersuite.TLS_AES_256_GCM_SHA384,
		ciphersuite.TLS_CHACHA20_POLY1305_SHA256,
		ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
		ciphersuite.TLS_PSK_WITH_AES_128_CCM_8,
		ciphersuite.TLS_PSK_WITH_AES_128_CCM,
		ciphersuite.TLS_PSK_WITH_AES_128_GCM_SHA256,
	}
}

// Config configures a Server. Build it as a literal; New applies defaults.
type Config struct {
	// Listeners are the UDP addresses served. Default: one on ":5684".
	Listeners []Listener
	// Store resolves PSK identities. Required.
	Store KeyStore
	// Backends maps a backend name to its UDP host:port. Required, non-empty.
	Backends map[string]string
	// DefaultBackend serves keys that name no backend. Empty: the only
	// backend when there is exactly one.
	DefaultBackend string
	// ServerNameBackends routes identities that name no backend by the
	// server name (SNI) of their handshake, e.g. "bs.example.com" to the
	// bootstrap server. Keys are compared case-insensitively. Nil: none.
	ServerNameBackends map[string]string
	// BootstrapBackend names the LwM2M bootstrap server: Bootstrap-Requests
	// (POST /bs) go there on their own upstream socket, everything else to
	// the identity's backend. Empty: bootstrap goes to the identity's
	// backend too.
	BootstrapBackend string
	// Versions are the DTLS versions served. Zero: DTLS 1.2 and 1.3.
	Versions pskstore.Versions
	// Groups are the (EC)DHE groups of DTLS 1.3 psk_dhe_ke and DTLS 1.2
	// ECDHE-PSK, in preference order. Nil: X25519 and P-256 (RFC 7925's
	// curve; DTLS 1.2 ECDHE-PSK stacks such as wolfSSL before 5.7 cannot
	// use X25519). The stack's default would put the hybrid X25519MLKEM768
	// first, which costs pion clients a HelloRetryRequest and a 1.8 KB
	// ClientHello; add it explicitly to offer it.
	Groups []elliptic.Curve
	// CipherSuites served. Nil: DefaultCipherSuites().
	CipherSuites []ciphersuite.ID
	// CIDLength is the length in bytes of the Connection IDs the gateway
	// issues (RFC 9146, RFC 9147 §9). Zero: 8. Negative: CIDs disabled.
	CIDLength int
	// MTU is the largest DTLS datagram the gateway sends, in bytes. Zero: 1200.
	MTU int
	// HandshakeTimeout bounds a handshake. Zero: 10 s.
	HandshakeTimeout time.Duration
	// LookupTimeout bounds one Store.Lookup. Zero: 2 s.
	LookupTimeout time.Duration
	// IdleTimeout closes a session without traffic in either direction for
	// this long. Zero: 75 min, longer than a one-hour LwM2M registration
	// lifetime so a device that updates hourly keeps its session.
	IdleTimeout time.Duration
	// DataPlane chooses who protects the records of established sessions:
	// DataPlaneLean (the zero value) hands each session over from pion to the
	// gateway's own record layer once its handshake completes, so a session
	// costs a few hundred bytes and no goroutine; DataPlanePion keeps the
	// handshake's pion Conn for the life of the session (the previous data
	// path, kept as a fallback for one release).
	DataPlane DataPlane
	// EventLoops is how many event loops carry the data plane (Linux; one
	// elsewhere). Each reads its own socket of every listener — the
	// listener's address bound that many times with SO_REUSEPORT, the
	// kernel spreading devices over them by address — and the upstream
	// sockets of the sessions whose handshake it started, so a device's
	// requests and answers stay on one loop. One loop uses up to one core.
	// Zero: 1.
	EventLoops int
	// RegistrationGrace is added to a registered device's LwM2M lifetime to
	// get its idle limit (when that exceeds IdleTimeout), so a device that
	// updates just before its lifetime ends is never cut off. Zero: 2 min.
	RegistrationGrace time.Duration
	// RegisterInterval is the sustained rate at which one session may send
	// Register or Bootstrap-Request (after a burst of 5); more get 4.29 Too
	// Many Requests from the gateway. Zero: one per 10 s.
	RegisterInterval time.Duration
	// AllowParallelSessions keeps older sessions of an identity alive when a
	// new handshake for it completes. Zero value (false): the new session
	// replaces the old one, so a rebooted device is never locked out.
	AllowParallelSessions bool
	// MaxDatagram is the largest datagram accepted from a device or backend,
	// in bytes; larger ones are dropped and counted. Zero: 18432, a maximal
	// DTLS record (2^14 bytes of plaintext plus the expansion RFC 6347
	// allows) and its header.
	MaxDatagram int
	// MaxSessions caps live sessions (established and handshaking); further
	// ClientHellos are dropped and counted. Zero: 200,000.
	MaxSessions int
	// MaxEmbryonic caps handshakes whose cookie has not been answered yet
	// (a spoofed source never answers it), whatever number of datagrams
	// they have seen; the oldest is evicted first. Half is for hellos from
	// new addresses, a quarter each for hellos from recently seen
	// addresses and for retransmissions of shed hellos (admission.go).
	// Zero: 2048.
	MaxEmbryonic int
	// MaxHandshakes caps handshakes in progress in pion, embryonic or not:
	// each costs a pion Conn and its goroutines. A ClientHello that finds
	// the pool full is shed (counted) and the device retransmits it; a
	// quarter of the pool is kept for hellos from recently seen addresses
	// and retransmissions of shed hellos. Zero: 4096.
	MaxHandshakes int
	// HandshakeRate is the sustained rate of new sessions per source IP, per
	// second, after HandshakeBurst. Zero: 200 (generous: a carrier-grade NAT
	// puts many devices behind one address). Negative: unlimited.
	HandshakeRate float64
	// HandshakeBurst is the per-IP burst of new sessions. Zero: 2 × HandshakeRate.
	HandshakeBurst int
	// PrefixHandshakeRate is the sustained rate of new sessions per source
	// prefix (PrefixLengthIPv4, PrefixLengthIPv6), per second, after
	// PrefixHandshakeBurst: a flood from one network cannot take every
	// handshake the gateway admits. Zero: 500. Negative: unlimited.
	PrefixHandshakeRate float64
	// PrefixHandshakeBurst is the per-prefix burst of new sessions. Zero:
	// 2 × PrefixHandshakeRate.
	PrefixHandshakeBurst int
	// PrefixLengthIPv4 is the length in bits of the IPv4 prefixes that
	// PrefixHandshakeRate counts, 1..32. Zero: 24.
	PrefixLengthIPv4 int
	// PrefixLengthIPv6 is the length in bits of the IPv6 prefixes that
	// PrefixHandshakeRate counts, 1..128. Zero: 64.
	PrefixLengthIPv6 int
	// NewHandshakeRate is, per second and over all sources, how many
	// ClientHellos of each admission class may start a handshake in pion:
	// hellos from addresses never seen, retransmissions of hellos shed
	// before, and hellos from addresses that completed a handshake within
	// RecentHandshakeWindow each have a bucket of this rate (burst: one
	// second's worth). Beyond it hellos are shed at random (counted), so a
	// spoofed flood costs at most this many pion Conns a second per class
	// whatever its rate. Zero: 1000. Negative: unlimited.
	NewHandshakeRate float64
	// RecentHandshakeWindow is how long an address that completed a
	// handshake keeps priority for new handshakes (a reboot, a
	// re-handshake). Zero: 24 h.
	RecentHandshakeWindow time.Duration
	// MaxRecentAddresses bounds the addresses remembered for
	// RecentHandshakeWindow; past it the oldest half is forgotten. Zero:
	// 65,536.
	MaxRecentAddresses int
	// Registrations keeps each identity's LwM2M registration (endpoint,
	// location, lifetime) across sessions and restarts, so a device that
	// re-handshakes updates the registration it created (L2). Nil: kept in
	// memory only, lost on restart.
	Registrations RegistrationStore
	// Sessions persists sealed snapshots of established sessions, so that a
	// graceful stop (Handoff) or a crash (a checkpoint every
	// CheckpointInterval) costs the devices no handshake (checkpoint.go).
	// Needs the lean data plane and SnapshotSealer. Nil: sessions end with
	// the process.
	Sessions SessionStore
	// SnapshotSealer seals the snapshots (the key store's KEK, a key of its
	// own for the purpose). Required with Sessions.
	SnapshotSealer Sealer
	// CheckpointInterval is how often changed sessions are snapshotted, and
	// so how much of a session's received traffic a crash can let be
	// replayed once to its restored session. Zero: 10 s.
	CheckpointInterval time.Duration
	// Cluster joins this gateway to replicas sharing one PostgreSQL store
	// (cluster.go): the CIDs it issues name it (ReplicaID), records of
	// sessions another replica owns are relayed to it over the replicas'
	// link, and the sessions of a replica whose lease ran out are taken
	// over. Needs Sessions (the same store), Connection IDs and LinkSealer.
	// Nil: a single gateway.
	Cluster Cluster
	// ReplicaID is this replica's id, 0..255: the first byte of every CID
	// it issues. Each replica of a cluster has its own, stable across
	// restarts (a StatefulSet's ordinal).
	ReplicaID int
	// LinkAddress is the UDP address this replica's end of the replicas'
	// link binds ("0.0.0.0:5685"). Required with Cluster.
	LinkAddress string
	// LinkAdvertise is the address other replicas reach the link at (the
	// pod's IP and the link port). Empty: LinkAddress as bound.
	LinkAdvertise string
	// LinkSealer seals link datagrams (a key from the KEK, for that purpose
	// only). Required with Cluster.
	LinkSealer Sealer
	// Lease is how long this replica's sessions remain its own without a
	// renewal in the store; renewed every third of it. Zero: 15 s.
	Lease time.Duration
	// BackendRetryAfter is the Max-Age of the 5.03 Service Unavailable the
	// gateway answers a device's confirmable request with while the
	// backend is known to be unreachable (ICMP port unreachable on its
	// upstream socket). Zero: 30 s.
	BackendRetryAfter time.Duration
	// UpstreamSources are local addresses the upstream sockets bind to, one
	// chosen per session: each address holds one port per device and
	// backend, about 28,000 with Linux's default ephemeral port range. Nil:
	// the kernel chooses.
	UpstreamSources []netip.Addr
	// Logger receives the gateway's logs. Nil: no logging.
	Logger *zap.Logger
	// IdentityTag turns an identity into the keyed tag that logs carry (R9).
	// Nil: a pskstore.Tagger with a random per-process secret.
	IdentityTag func(identity []byte) string
	// LogIdentities logs raw identities next to their tag. Operator opt-in;
	// zero value (false) logs tags only (R9).
	LogIdentities bool
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("gateway: server closed")

// ErrNoBackend is returned when a key names a backend that is not configured.
var ErrNoBackend = errors.New("gateway: no such backend")

func (c *Config) setDefaults() error {
	if c.Store == nil {
		return errors.New("gateway: config: Store is required")
	}
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Address: ":5684"}}
	}
	if len(c.Backends) == 0 {
		return errors.New("gateway: config: at least one backend is required")
	}
	for name, addr := range c.Backends {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("gateway: config: backend %q address %q: %w", name, addr, err)
		}
	}
	if c.DefaultBackend == "" && len(c.Backends) == 1 {
		for name := range c.Backends {
			c.DefaultBackend = name
		}
	}
	if c.DefaultBackend != "" {
		if _, ok := c.Backends[c.DefaultBackend]; !ok {
			return fmt.Errorf("gateway: config: default backend %q: %w", c.DefaultBackend, ErrNoBackend)
		}
	}
	for sni, name := range c.ServerNameBackends {
		if _, ok := c.Backends[name]; !ok {
			return fmt.Errorf("gateway: config: server name %q backend %q: %w", sni, name, ErrNoBackend)
		}
	}
	for _, l := range c.Listeners {
		if _, ok := c.Backends[l.Backend]; l.Backend != "" && !ok {
			return fmt.Errorf("gateway: config: listener %q backend %q: %w", l.Address, l.Backend, ErrNoBackend)
		}
	}
	if c.BootstrapBackend != "" {
		if _, ok := c.Backends[c.BootstrapBackend]; !ok {
			return fmt.Errorf("gateway: config: bootstrap backend %q: %w", c.BootstrapBackend, ErrNoBackend)
		}
	}
	if c.Versions == 0 {
		c.Versions = pskstore.DTLS12 | pskstore.DTLS13
	}
	if c.Groups == nil {
		c.Groups = []elliptic.Curve{elliptic.X25519, elliptic.P256}
	}
	if c.CipherSuites == nil {
		c.CipherSuites = DefaultCipherSuites()
	}
	if c.CIDLength == 0 {
		c.CIDLength = 8
	}
	if c.CIDLength > 32 {
		return fmt.Errorf("gateway: config: CIDLength %d above 32", c.CIDLength)
	}
	if c.MTU == 0 {
		c.MTU = 1200
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.LookupTimeout == 0 {
		c.LookupTimeout = 2 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 75 * time.Minute
	}
	if c.DataPlane > DataPlanePion {
		return fmt.Errorf("gateway: config: unknown DataPlane %d", c.DataPlane)
	}
	switch {
	case c.EventLoops < 0 || c.EventLoops > maxEventLoops:
		return fmt.Errorf("gateway: config: EventLoops %d: want 1 to %d", c.EventLoops, maxEventLoops)
	case c.EventLoops == 0 || !multiLoop:
		c.EventLoops = 1
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = 4096
	}
	if c.Sessions != nil {
		if c.SnapshotSealer == nil {
			return errors.New("gateway: config: Sessions needs a SnapshotSealer")
		}
		if c.DataPlane != DataPlaneLean {
			return errors.New("gateway: config: Sessions needs the lean data plane")
		}
	}
	if c.Cluster != nil {
		switch {
		case c.Sessions == nil:
			return errors.New("gateway: config: Cluster needs Sessions (the same store)")
		case c.LinkSealer == nil || c.LinkAddress == "":
			return errors.New("gateway: config: Cluster needs LinkAddress and LinkSealer")
		case c.CIDLength < 2:
			return errors.New("gateway: config: Cluster needs Connection IDs of at least 2 bytes (the first names the replica)")
		case c.ReplicaID < 0 || c.ReplicaID > 255:
			return fmt.Errorf("gateway: config: ReplicaID %d outside 0..255", c.ReplicaID)
		}
		if c.Lease == 0 {
			c.Lease = 15 * time.Second
		}
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = 10 * time.Second
	}
	if c.BackendRetryAfter == 0 {
		c.BackendRetryAfter = 30 * time.Second
	}
	if c.RegisterInterval == 0 {
		c.RegisterInterval = 10 * time.Second
	}
	if c.RegistrationGrace == 0 {
		c.RegistrationGrace = 2 * time.Minute
	}
	if c.MaxDatagram == 0 {
		c.MaxDatagram = 18432
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = 200_000
	}
	if c.MaxEmbryonic == 0 {
		c.MaxEmbryonic = 2048
	}
	switch {
	case c.HandshakeRate == 0:
		c.HandshakeRate = 200
	case c.HandshakeRate < 0:
		c.HandshakeRate = float64(rate.Inf)
	}
	if c.HandshakeBurst == 0 {
		c.HandshakeBurst = int(min(2*c.HandshakeRate, 1<<20))
	}
	if err := c.setAdmissionDefaults(); err != nil {
		return err
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.IdentityTag == nil {
		c.IdentityTag = pskstore.NewTagger(nil).Tag
	}
	return nil
}

// keyHash is the DTLS 1.3 hash of a key, SHA-256 when unset.
func keyHash(k pskstore.Key) crypto.Hash {
	if k.Hash == 0 {
		return crypto.SHA256
	}
	return k.Hash
}

// setAdmissionDefaults applies the defaults of the flood limits
// (admission.go) and checks their ranges.
func (c *Config) setAdmissionDefaults() error {
	switch {
	case c.PrefixHandshakeRate == 0:
		c.PrefixHandshakeRate = 500
	case c.PrefixHandshakeRate < 0:
		c.PrefixHandshakeRate = float64(rate.Inf)
	}
	if c.PrefixHandshakeBurst == 0 {
		c.PrefixHandshakeBurst = int(min(2*c.PrefixHandshakeRate, 1<<20))
	}
	if c.PrefixLengthIPv4 == 0 {
		c.PrefixLengthIPv4 = 24
	}
	if c.PrefixLengthIPv6 == 0 {
		c.PrefixLengthIPv6 = 64
	}
	if c.PrefixLengthIPv4 < 1 || c.PrefixLengthIPv4 > 32 {
		return fmt.Errorf("gateway: config: PrefixLengthIPv4 %d not in 1..32", c.PrefixLengthIPv4)
	}
	if c.PrefixLengthIPv6 < 1 || c.PrefixLengthIPv6 > 128 {
		return fmt.Errorf("gateway: config: PrefixLengthIPv6 %d not in 1..128", c.PrefixLengthIPv6)
	}
	switch {
	case c.NewHandshakeRate == 0:
		c.NewHandshakeRate = 1000
	case c.NewHandshakeRate < 0:
		c.NewHandshakeRate = float64(rate.Inf)
	}
	if c.RecentHandshakeWindow == 0 {
		c.RecentHandshakeWindow = 24 * time.Hour
	}
	if c.MaxRecentAddresses == 0 {
		c.MaxRecentAddresses = 1 << 16
	}
	if c.PrefixHandshakeBurst < 0 || c.RecentHandshakeWindow < 0 || c.MaxRecentAddresses < 0 {
		return errors.New("gateway: config: PrefixHandshakeBurst, RecentHandshakeWindow and MaxRecentAddresses must not be negative")
	}
	return nil
}
