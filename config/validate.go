package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Bounds checked by Validate.
const (
	MinMTU                = 256
	MaxMTU                = 9000
	MaxConnectionIDLength = 32
	MaxIdentityLength     = 65535 // the wire limit of a PSK identity (R7)
	// MaxPostgresIdentityLength is the longest identity a postgres store
	// keeps (pskstore/postgres.MaxIdentityLen: a btree index entry).
	MaxPostgresIdentityLength = 2048
	// MaxEventLoops bounds sessions.event_loops (gateway.Config.EventLoops).
	MaxEventLoops  = 256
	maxBackendName = 63
)

// Validate checks every field and returns nil or a FieldErrors holding every
// problem found. It does no I/O (files named in Store are not opened) and
// does not modify c. Lines are 0: Parse and Load add them.
func (c *Config) Validate() error {
	var es FieldErrors
	c.validateListeners(&es)
	c.validateBackends(&es)
	c.validateStore(&es)
	c.validateDTLS(&es)
	c.validateSessions(&es)
	c.validateLog(&es)
	c.validateRouting(&es)
	c.validateLimits(&es)
	c.validateCluster(&es)
	for i, a := range c.Upstream.SourceAddresses {
		if ip := net.ParseIP(a); ip == nil {
			es.add(fmt.Sprintf("upstream.source_addresses[%d]", i), a, "must be an IP address")
		}
	}
	if c.Admin.Address != "" {
		checkAddress(&es, "admin.address", c.Admin.Address, true)
	}
	return es.err()
}

func (c *Config) validateCluster(es *FieldErrors) {
	cl := c.Cluster
	if cl.ReplicaID < -1 || cl.ReplicaID > 255 {
		es.add("cluster.replica_id", strconv.Itoa(cl.ReplicaID), "must be 0..255, or -1 for the host name's number")
	}
	if cl.Lease <= 0 {
		es.add("cluster.lease", cl.Lease.String(), "must be greater than 0")
	}
	if !cl.Enabled {
		return
	}
	checkAddress(es, "cluster.link_address", cl.LinkAddress, true)
	if cl.LinkAdvertise != "" {
		checkAddress(es, "cluster.link_advertise", cl.LinkAdvertise, false)
	}
	switch {
	case c.Store.Type != StorePostgres:
		es.add("cluster.enabled", "true", "needs store.type postgres: the replicas share its database")
	case c.Sessions.Snapshot != SnapshotPostgres:
		es.add("cluster.enabled", "true", "needs sessions.snapshot: postgres")
	case c.DTLS.ConnectionIDLength < 2:
		es.add("cluster.enabled", "true", "needs dtls.connection_id_length >= 2: the first byte names the replica")
	}
}

func (c *Config) validateListeners(es *FieldErrors) {
	seen := make(map[string]int)
	for i, l := range c.Listeners {
		field := fmt.Sprintf("listeners[%d]", i)
		checkAddress(es, field+".address", l.Address, true)
		if j, ok := seen[l.Address]; ok && l.Address != "" {
			es.add(field+".address", l.Address, "duplicate of listeners[%d].address", j)
		} else {
			seen[l.Address] = i
		}
		switch l.MissingSNI {
		case "", SNIAllow, SNIRequire:
		default:
			es.add(field+".missing_sni", string(l.MissingSNI), "must be %q or %q", SNIAllow, SNIRequire)
		}
	}
}

func (c *Config) validateBackends(es *FieldErrors) {
	names := c.BackendNames()
	if len(names) == 0 {
		es.add("backends", "", "at least one backend is required")
	}
	for _, name := range names {
		field := "backends." + name
		if !validBackendName(name) {
			es.add(field, name, "backend name must be 1..%d letters, digits, '-' or '_'", maxBackendName)
		}
		checkAddress(es, field+".address", c.Backends[name].Address, false)
	}
	switch {
	case c.DefaultBackend != "":
		if _, ok := c.Backends[c.DefaultBackend]; !ok && len(names) > 0 {
			es.add("default_backend", c.DefaultBackend, "names no declared backend (declared: %s)", strings.Join(names, ", "))
		} else if !ok {
			es.add("default_backend", c.DefaultBackend, "names no declared backend")
		}
	case len(names) > 1:
		es.add("default_backend", "", "required when several backends are declared (declared: %s)", strings.Join(names, ", "))
	}
}

func (c *Config) validateStore(es *FieldErrors) {
	s := c.Store
	switch s.Type {
	case "", StoreFile:
		if s.Path == "" {
			es.add("store.path", "", "required for store type %q", StoreFile)
		}
	case StoreMemory:
		if s.KEKFile != "" {
			es.add("store.kek_file", s.KEKFile, "only for store types %q and %q", StoreFile, StorePostgres)
		}
		if s.KEKEnv != "" {
			es.add("store.kek_env", s.KEKEnv, "only for store types %q and %q", StoreFile, StorePostgres)
		}
	case StorePostgres:
		switch {
		case s.DSN == "" && s.DSNEnv == "":
			es.add("store.dsn_env", "", "store type %q needs store.dsn_env (preferred: the DSN may hold a password) or store.dsn", StorePostgres)
		case s.DSN != "" && s.DSNEnv != "":
			es.add("store.dsn_env", s.DSNEnv, "give store.dsn or store.dsn_env, not both")
		case s.DSN != "":
			if msg := checkDSN(s.DSN); msg != "" {
				es.add("store.dsn", RedactDSN(s.DSN), "%s", msg)
			}
		case !validEnvName(s.DSNEnv):
			es.add("store.dsn_env", s.DSNEnv, "must be an environment variable name: letters, digits and '_', not starting with a digit")
		}
		if n := c.DTLS.MaxIdentityLength; n > MaxPostgresIdentityLength {
			es.add("dtls.max_identity_length", strconv.Itoa(n), "at most %d bytes with store type %q (identities are its primary key)", MaxPostgresIdentityLength, StorePostgres)
		}
	default:
		es.add("store.type", string(s.Type), "must be %q, %q or %q", StoreFile, StoreMemory, StorePostgres)
	}
	if s.Type != StorePostgres {
		if s.DSN != "" {
			es.add("store.dsn", RedactDSN(s.DSN), "only for store type %q", StorePostgres)
		}
		if s.DSNEnv != "" {
			es.add("store.dsn_env", s.DSNEnv, "only for store type %q", StorePostgres)
		}
	}
	if s.LookupTimeout <= 0 {
		es.add("store.lookup_timeout", s.LookupTimeout.String(), "must be greater than 0")
	}
	if s.KEKFile != "" && s.KEKEnv != "" {
		es.add("store.kek_env", s.KEKEnv, "give store.kek_file or store.kek_env, not both")
	} else if s.KEKEnv != "" && !validEnvName(s.KEKEnv) {
		es.add("store.kek_env", s.KEKEnv, "must be an environment variable name: letters, digits and '_', not starting with a digit")
	}
	if s.InsecurePlaintextKeys && !s.HasKEK() {
		es.add("store.insecure_plaintext_keys", "true", "only meaningful with store.kek_file or store.kek_env")
	}
}

func validEnvName(name string) bool {
	for i, r := range name {
		if !isAlnum(r) && r != '_' || i == 0 && '0' <= r && r <= '9' {
			return false
		}
	}
	return name != ""
}

func (c *Config) validateDTLS(es *FieldErrors) {
	d := c.DTLS
	checkChoices(es, "dtls.versions", d.Versions, []Version{DTLS12, DTLS13}, "dtls version")
	checkChoices(es, "dtls.groups", d.Groups,
		[]Group{GroupX25519, GroupX25519MLKEM768, GroupP256, GroupP384}, "group")
	checkChoices(es, "dtls.cipher_suites", d.CipherSuites, CipherSuites(), "cipher suite")
	if len(d.CipherSuites) > 0 {
		versions := d.Versions
		if len(versions) == 0 {
			versions = []Version{DTLS12, DTLS13}
		}
		for _, v := range versions {
			if v != DTLS12 && v != DTLS13 {
				continue // reported above
			}
			if !slices.ContainsFunc(d.CipherSuites, func(s CipherSuite) bool { return s.Version() == v }) {
				es.add("dtls.cipher_suites", "", "no cipher suite for enabled dtls version %s", v)
			}
		}
	}
	if d.ConnectionIDLength < 0 || d.ConnectionIDLength > MaxConnectionIDLength {
		es.add("dtls.connection_id_length", strconv.Itoa(d.ConnectionIDLength),
			"must be between 0 (disabled) and %d bytes", MaxConnectionIDLength)
	}
	if d.MTU < MinMTU || d.MTU > MaxMTU {
		es.add("dtls.mtu", strconv.Itoa(d.MTU), "must be between %d and %d bytes", MinMTU, MaxMTU)
	}
	if d.HandshakeTimeout <= 0 {
		es.add("dtls.handshake_timeout", d.HandshakeTimeout.String(), "must be greater than 0")
	}
	if d.MaxIdentityLength < 1 || d.MaxIdentityLength > MaxIdentityLength {
		es.add("dtls.max_identity_length", strconv.Itoa(d.MaxIdentityLength),
			"must be between 1 and %d bytes", MaxIdentityLength)
	}
}

func (c *Config) validateSessions(es *FieldErrors) {
	s := c.Sessions
	if s.IdleTimeout <= 0 {
		es.add("sessions.idle_timeout", s.IdleTimeout.String(), "must be greater than 0")
	}
	if s.DrainTimeout < 0 {
		es.add("sessions.drain_timeout", s.DrainTimeout.String(), "must not be negative")
	}
	if s.RegistrationGrace <= 0 {
		es.add("sessions.registration_grace", s.RegistrationGrace.String(), "must be greater than 0")
	}
	if s.CheckpointInterval <= 0 {
		es.add("sessions.checkpoint_interval", s.CheckpointInterval.String(), "must be greater than 0")
	}
	if s.Snapshot != "" {
		switch {
		case !c.Store.HasKEK():
			es.add("sessions.snapshot", s.Snapshot, "needs a key-encryption key (store.kek_file or store.kek_env): snapshots are sealed with it")
		case s.DataPlane == DataPlanePion:
			es.add("sessions.snapshot", s.Snapshot, "needs the lean data plane (sessions.data_plane: lean)")
		case s.Snapshot == SnapshotPostgres && c.Store.Type != StorePostgres:
			es.add("sessions.snapshot", s.Snapshot, "postgres needs store.type postgres")
		}
	}
	switch s.DataPlane {
	case "", DataPlaneLean, DataPlanePion:
	default:
		es.add("sessions.data_plane", string(s.DataPlane), "must be %q or %q", DataPlaneLean, DataPlanePion)
	}
	if s.EventLoops < 1 || s.EventLoops > MaxEventLoops {
		es.add("sessions.event_loops", strconv.Itoa(s.EventLoops), "must be between 1 and %d (one loop uses up to one core)", MaxEventLoops)
	}
}

// validateRouting checks that every backend named for routing is declared.
func (c *Config) validateRouting(es *FieldErrors) {
	known := func(field, name string) {
		if _, ok := c.Backends[name]; !ok && name != "" {
			es.add(field, name, "names no declared backend (declared: %s)", strings.Join(c.BackendNames(), ", "))
		}
	}
	known("bootstrap_backend", c.BootstrapBackend)
	for i, l := range c.Listeners {
		known(fmt.Sprintf("listeners[%d].backend", i), l.Backend)
	}
	for _, sni := range slices.Sorted(maps.Keys(c.ServerNameBackends)) {
		name := c.ServerNameBackends[sni]
		if name == "" {
			es.add("server_name_backends."+sni, "", "needs a backend name")
		}
		known("server_name_backends."+sni, name)
	}
}

func (c *Config) validateLimits(es *FieldErrors) {
	l := c.Limits
	if l.MaxSessions <= 0 {
		es.add("limits.max_sessions", strconv.Itoa(l.MaxSessions), "must be greater than 0")
	}
	if l.MaxEmbryonic <= 0 {
		es.add("limits.max_embryonic", strconv.Itoa(l.MaxEmbryonic), "must be greater than 0")
	}
	if l.HandshakeRate < 0 {
		es.add("limits.handshake_rate", strconv.FormatFloat(l.HandshakeRate, 'g', -1, 64), "must not be negative (0 means unlimited)")
	}
	if l.HandshakeBurst < 0 {
		es.add("limits.handshake_burst", strconv.Itoa(l.HandshakeBurst), "must not be negative")
	}
	if l.RegisterInterval <= 0 {
		es.add("limits.register_interval", l.RegisterInterval.String(), "must be greater than 0")
	}
	if l.MaxDatagram < 1280 || l.MaxDatagram > 65535 {
		es.add("limits.max_datagram", strconv.Itoa(l.MaxDatagram), "must be between 1280 and 65535 bytes")
	}
	c.validateFloodLimits(es)
}

// validateFloodLimits checks the limits that admit new handshakes under a
// flood of ClientHellos.
func (c *Config) validateFloodLimits(es *FieldErrors) {
	l := c.Limits
	if l.MaxHandshakes <= 0 {
		es.add("limits.max_handshakes", strconv.Itoa(l.MaxHandshakes), "must be greater than 0")
	}
	if l.PrefixHandshakeRate < 0 {
		es.add("limits.prefix_handshake_rate", strconv.FormatFloat(l.PrefixHandshakeRate, 'g', -1, 64), "must not be negative (0 means unlimited)")
	}
	if l.PrefixHandshakeBurst < 0 {
		es.add("limits.prefix_handshake_burst", strconv.Itoa(l.PrefixHandshakeBurst), "must not be negative")
	}
	if l.PrefixLengthIPv4 < 1 || l.PrefixLengthIPv4 > 32 {
		es.add("limits.prefix_length_ipv4", strconv.Itoa(l.PrefixLengthIPv4), "must be between 1 and 32 bits")
	}
	if l.PrefixLengthIPv6 < 1 || l.PrefixLengthIPv6 > 128 {
		es.add("limits.prefix_length_ipv6", strconv.Itoa(l.PrefixLengthIPv6), "must be between 1 and 128 bits")
	}
	if l.NewHandshakeRate < 0 {
		es.add("limits.new_handshake_rate", strconv.FormatFloat(l.NewHandshakeRate, 'g', -1, 64), "must not be negative (0 means unlimited)")
	}
	if l.RecentHandshakeWindow <= 0 {
		es.add("limits.recent_handshake_window", l.RecentHandshakeWindow.String(), "must be greater than 0")
	}
	if l.MaxRecentAddresses <= 0 {
		es.add("limits.max_recent_addresses", strconv.Itoa(l.MaxRecentAddresses), "must be greater than 0")
	}
}

func (c *Config) validateLog(es *FieldErrors) {
	l := c.Log
	switch l.Level {
	case "", LevelDebug, LevelInfo, LevelWarn, LevelError:
	default:
		es.add("log.level", string(l.Level), "must be one of %s, %s, %s, %s", LevelDebug, LevelInfo, LevelWarn, LevelError)
	}
	switch l.Format {
	case "", FormatJSON, FormatConsole:
	default:
		es.add("log.format", string(l.Format), "must be %q or %q", FormatJSON, FormatConsole)
	}
	switch l.Identities {
	case "", IdentitiesTag, IdentitiesClear:
	default:
		es.add("log.identities", string(l.Identities), "must be %q or %q", IdentitiesTag, IdentitiesClear)
	}
	if d := l.FlushInterval; d < 0 || d > MaxLogFlushInterval {
		es.add("log.flush_interval", d.String(), "must be 0s (write every line at once) to %s", MaxLogFlushInterval)
	}
}

// MaxLogFlushInterval bounds log.flush_interval: lines later than that are
// no use to an operator watching the gateway.
const MaxLogFlushInterval = Duration(time.Minute)

// checkChoices reports the elements of list that are not in allowed, and
// duplicates, one error per element ("dtls.groups[1]").
func checkChoices[T ~string](es *FieldErrors, field string, list, allowed []T, what string) {
	names := make([]string, len(allowed))
	for j, a := range allowed {
		names[j] = string(a)
	}
	seen := make(map[T]bool, len(list))
	for i, v := range list {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case !slices.Contains(allowed, v):
			es.add(f, string(v), "unknown %s (supported: %s)", what, strings.Join(names, ", "))
		case seen[v]:
			es.add(f, string(v), "duplicate %s", what)
		}
		seen[v] = true
	}
}

// checkAddress checks a UDP host:port. A listener may leave the host empty
// (all interfaces) and use port 0 (ephemeral); a backend may not.
func checkAddress(es *FieldErrors, field, addr string, listen bool) {
	if addr == "" {
		es.add(field, "", "required (host:port)")
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		es.add(field, addr, `must be host:port, with an ipv6 host in brackets like "[::1]:5684"`)
		return
	}
	switch {
	case host == "" && !listen:
		es.add(field, addr, "host is required")
	case host != "" && !validHost(host):
		es.add(field, addr, "host %q is neither an ip address nor a dns name", host)
	}
	n, err := strconv.Atoi(port)
	lowest := 1
	if listen {
		lowest = 0
	}
	switch {
	case err != nil && !isDigits(port):
		es.add(field, addr, "port %q must be a number", port)
	case err != nil || n < lowest || n > 65535:
		es.add(field, addr, "port %s out of range %d..65535", port, lowest)
	}
}

// validHost reports whether host is an IP address (with an optional IPv6
// zone) or a syntactically valid DNS name.
func validHost(host string) bool {
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if len(host) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(host, "."), ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !isAlnum(r) && r != '-' && r != '_' {
				return false
			}
		}
	}
	return true
}

func validBackendName(name string) bool {
	if len(name) == 0 || len(name) > maxBackendName {
		return false
	}
	for _, r := range name {
		if !isAlnum(r) && r != '-' && r != '_' {
			return false
		}
	}
	return true
}

func isAlnum(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
