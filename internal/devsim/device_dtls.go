package devsim

import (
	"crypto"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"github.com/pion/dtls/v4/pkg/protocol"
	extension13 "github.com/pion/dtls/v4/pkg/protocol/extension/dtls13"
	"github.com/pion/dtls/v4/pkg/protocol/handshake"
	"go.uber.org/zap"
)

// dtlsOptions validates cfg and translates it into pion client options.
func (cfg *DeviceConfig) dtlsOptions() ([]dtls.ClientOption, error) {
	switch {
	case cfg.Server == "":
		return nil, errors.New("devsim: DeviceConfig.Server is empty")
	case len(cfg.Identity) == 0:
		return nil, errors.New("devsim: DeviceConfig.Identity is empty")
	case len(cfg.Key) == 0:
		return nil, errors.New("devsim: DeviceConfig.Key is empty")
	case cfg.Endpoint == "":
		return nil, errors.New("devsim: DeviceConfig.Endpoint is empty")
	}
	hash := cfg.Hash
	if hash == 0 {
		hash = crypto.SHA256
	}
	if hash != crypto.SHA256 && hash != crypto.SHA384 {
		return nil, fmt.Errorf("devsim: DeviceConfig.Hash %v: want SHA-256 or SHA-384", hash)
	}
	psk := dtls.PSK{Identity: cfg.Identity, Key: cfg.Key, Hash: hash}
	opts := []dtls.ClientOption{
		dtls.WithPSK(func() ([]dtls.PSK, error) { return []dtls.PSK{psk}, nil }, nil),
	}

	suites := cfg.CipherSuites
	switch cfg.Version {
	case "", "1.3":
		modes, err := parseModes(cfg.Mode)
		if err != nil {
			return nil, err
		}
		if suites == nil {
			suites = []ciphersuite.ID{ciphersuite.TLS_AES_128_GCM_SHA256}
			if hash == crypto.SHA384 {
				suites = []ciphersuite.ID{ciphersuite.TLS_AES_256_GCM_SHA384}
			}
		}
		opts = append(opts,
			dtls.WithMinVersion(protocol.Version1_3),
			dtls.WithMaxVersion(protocol.Version1_3),
			dtls.WithClientHelloMessageHook(offerModes(modes)))
	case "1.2":
		if suites == nil {
			suites = []ciphersuite.ID{ciphersuite.TLS_PSK_WITH_AES_128_CCM_8}
		}
		opts = append(opts,
			dtls.WithMinVersion(protocol.Version1_2),
			dtls.WithMaxVersion(protocol.Version1_2))
	default:
		return nil, fmt.Errorf("devsim: DeviceConfig.Version %q: want \"1.3\" or \"1.2\"", cfg.Version)
	}
	groups := cfg.Groups
	if groups == nil {
		groups = []elliptic.Curve{elliptic.X25519}
	}
	opts = append(opts, dtls.WithCipherSuites(suites...), dtls.WithEllipticCurves(groups...))
	if cfg.ServerName != "" {
		opts = append(opts, dtls.WithServerName(cfg.ServerName))
	}
	switch {
	case cfg.FlightInterval < 0:
		return nil, fmt.Errorf("devsim: DeviceConfig.FlightInterval %v: must not be negative", cfg.FlightInterval)
	case cfg.FlightInterval > 0:
		opts = append(opts, dtls.WithFlightInterval(cfg.FlightInterval))
	}
	if cfg.RehandshakeIdle < 0 {
		return nil, fmt.Errorf("devsim: DeviceConfig.RehandshakeIdle %v: must not be negative", cfg.RehandshakeIdle)
	}
	if !cfg.NoConnectionID {
		gen := dtls.OnlySendCIDGenerator()
		if cfg.ConnectionIDLength > 0 {
			gen = dtls.RandomCIDGenerator(cfg.ConnectionIDLength)
		}
		// The policy governs the peer's address changes; a device does not
		// follow a gateway that moves.
		opts = append(opts, dtls.WithConnectionID(gen, dtls.CIDPathMigrationReject))
	}
	if cfg.Logger != nil {
		opts = append(opts, dtls.WithLoggerFactory(pionLoggerFactory{cfg.Logger}))
	} else {
		opts = append(opts, dtls.WithLoggerFactory(pionLoggerFactory{zap.NewNop()}))
	}
	return opts, nil
}

// parseModes parses DeviceConfig.Mode.
func parseModes(s string) ([]extension13.PSKKeyExchangeMode, error) {
	if s == "" {
		s = ModePSKDHE
	}
	var modes []extension13.PSKKeyExchangeMode
	for name := range strings.SplitSeq(s, ",") {
		var m extension13.PSKKeyExchangeMode
		switch strings.TrimSpace(name) {
		case ModePSKDHE:
			m = extension13.PSKDHEKE
		case ModePSK:
			m = extension13.PSKKE
		default:
			return nil, fmt.Errorf("devsim: DeviceConfig.Mode %q: unknown mode %q", s, name)
		}
		if slices.Contains(modes, m) {
			return nil, fmt.Errorf("devsim: DeviceConfig.Mode %q: %q twice", s, name)
		}
		modes = append(modes, m)
	}
	return modes, nil
}

// offerModes returns a ClientHello hook that replaces the
// psk_key_exchange_modes extension pion adds (psk_dhe_ke, psk_ke) with modes.
// pion applies the hook after adding the PSK offer and computes the binders
// over the hooked message (FinalizeClientHelloWithPSKs), so the binders stay
// valid; pre_shared_key must remain the last extension, which replacing in
// place preserves.
func offerModes(modes []extension13.PSKKeyExchangeMode) func(handshake.MessageClientHello) handshake.Message {
	return func(hello handshake.MessageClientHello) handshake.Message {
		hello.Extensions = slices.Clone(hello.Extensions)
		for i, ext := range hello.Extensions {
			if _, ok := ext.(*extension13.PSKKeyExchangeModes); ok {
				hello.Extensions[i] = &extension13.PSKKeyExchangeModes{Modes: slices.Clone(modes)}
			}
		}
		return &hello
	}
}

type versionName protocol.Version

func (v versionName) String() string {
	switch protocol.Version(v) {
	case protocol.Version1_3:
		return "1.3"
	case protocol.Version1_2:
		return "1.2"
	}
	return fmt.Sprintf("0x%04x", uint16(v))
}
