package main

import (
	"net/netip"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/gateway"
	"github.com/lwm2m-gateway/gateway/pskstore"
)

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

// lookupMargin is what the gateway's lookup bound leaves a PostgreSQL
// store's own one (store.lookup_timeout) to fail first.
const lookupMargin = 250 * time.Millisecond

// gatewayConfig translates a validated configuration file into a
// gateway.Config; config never imports gateway, so the mapping lives here.
func gatewayConfig(c *config.Config, ks *keyStore, log *zap.Logger) gateway.Config {
	gc := gateway.Config{
		Store:                 ks.Store,
		Backends:              map[string]string{},
		DefaultBackend:        c.DefaultBackend,
		MTU:                   c.DTLS.MTU,
		HandshakeTimeout:      time.Duration(c.DTLS.HandshakeTimeout),
		IdleTimeout:           time.Duration(c.Sessions.IdleTimeout),
		AllowParallelSessions: !c.Sessions.OnePerIdentity,
		Logger:                log,
		IdentityTag:           ks.tag,
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
		MaxHandshakes:         c.Limits.MaxHandshakes,
		PrefixHandshakeRate:   c.Limits.PrefixHandshakeRate,
		PrefixHandshakeBurst:  c.Limits.PrefixHandshakeBurst,
		PrefixLengthIPv4:      c.Limits.PrefixLengthIPv4,
		PrefixLengthIPv6:      c.Limits.PrefixLengthIPv6,
		NewHandshakeRate:      c.Limits.NewHandshakeRate,
		RecentHandshakeWindow: time.Duration(c.Limits.RecentHandshakeWindow),
		MaxRecentAddresses:    c.Limits.MaxRecentAddresses,
	}
	if lt := time.Duration(c.Store.LookupTimeout); c.Store.Type == config.StorePostgres && lt+lookupMargin > 2*time.Second {
		// The store bounds its lookups itself (store.lookup_timeout); the
		// gateway's own bound (2s by default) must not cut them shorter.
		gc.LookupTimeout = lt + lookupMargin
	}
	// config: a rate of 0 means unlimited; gateway: 0 means the default.
	for _, r := range []*float64{&gc.HandshakeRate, &gc.PrefixHandshakeRate, &gc.NewHandshakeRate} {
		if *r == 0 {
			*r = -1
		}
	}
	if gc.CIDLength == 0 {
		gc.CIDLength = -1 // config: 0 disables; gateway: 0 means the default
	}
	for _, a := range c.Upstream.SourceAddresses {
		if ip, err := netip.ParseAddr(a); err == nil { // config validated them
			gc.UpstreamSources = append(gc.UpstreamSources, ip.Unmap())
		}
	}
	if c.Sessions.DataPlane == config.DataPlanePion {
		gc.DataPlane = gateway.DataPlanePion
	}
	gc.EventLoops = c.Sessions.EventLoops
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
		var pv pskstore.Versions
		if err := pv.UnmarshalText([]byte(v)); err == nil { // config validated the names
			gc.Versions |= pv
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
