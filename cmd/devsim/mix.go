package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
)

// profile is one kind of handshake a simulated device makes: a DTLS version,
// a cipher suite and, for DTLS 1.3, the PSK key-exchange mode it offers.
type profile struct {
	name    string // as written in --mix, e.g. "1.3-dhe"
	version string // "1.3" or "1.2"
	mode    string // devsim.ModePSKDHE or devsim.ModePSK; "" for 1.2
	suite   ciphersuite.ID
	plain   bool // a DTLS 1.2 plain-PSK suite: the key must be Legacy (R3)
}

// profiles are the handshakes --mix can ask for.
var profiles = []profile{
	{name: "1.3-dhe", version: "1.3", mode: devsim.ModePSKDHE, suite: ciphersuite.TLS_AES_128_GCM_SHA256},
	{name: "1.3-ke", version: "1.3", mode: devsim.ModePSK, suite: ciphersuite.TLS_AES_128_GCM_SHA256},
	{name: "1.3-chacha", version: "1.3", mode: devsim.ModePSKDHE, suite: ciphersuite.TLS_CHACHA20_POLY1305_SHA256},
	{name: "1.2-ccm8", version: "1.2", suite: ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, plain: true},
	{name: "1.2-ccm", version: "1.2", suite: ciphersuite.TLS_PSK_WITH_AES_128_CCM, plain: true},
	{name: "1.2-gcm", version: "1.2", suite: ciphersuite.TLS_PSK_WITH_AES_128_GCM_SHA256, plain: true},
	{name: "1.2-ecdhe", version: "1.2", suite: ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256},
}

func profileNames() string {
	names := make([]string, len(profiles))
	for i, p := range profiles {
		names[i] = p.name
	}
	return strings.Join(names, ", ")
}

// allows reports whether key k's bindings let it make this handshake at a
// gateway that enforces R2/R3 (versions, modes, legacy).
func (p *profile) allows(k pskstore.Key) bool {
	k.Normalize()
	low := k.AllowLowEntropy // R2: never psk_ke nor plain PSK
	switch {
	case p.version == "1.3" && !k.Versions.Has(pskstore.DTLS13):
		return false
	case p.version == "1.2" && !k.Versions.Has(pskstore.DTLS12):
		return false
	case p.mode == devsim.ModePSK:
		return k.Modes.Has(pskstore.ModeKE) && !low
	case p.mode == devsim.ModePSKDHE:
		return k.Modes.Has(pskstore.ModeDHE)
	case p.plain:
		return k.Legacy && !low
	}
	return true
}

// policy returns the bindings a generated key needs for this handshake
// (--gen-keys): psk_ke listed for 1.3-ke, legacy for plain PSK.
func (p *profile) policy(k *pskstore.Key) {
	switch {
	case p.mode == devsim.ModePSK:
		k.Modes = pskstore.ModeDHE | pskstore.ModeKE
	case p.plain:
		k.Legacy = true
	}
}

// share is one weighted entry of --mix or --pattern.
type share struct {
	name   string
	weight int
}

// mix is a parsed --mix: profiles with integer weights.
type mix struct {
	entries []*profile
	weights []int
}

// errSpec is wrapped by every --mix and --pattern syntax error.
var errSpec = errors.New("bad weight list")

// parseShares parses "a=60,b=20,c" (a missing weight is 1) with names from
// known. Weights are integers 0..1,000,000 and at least one is positive.
func parseShares(spec string, known func(string) bool) ([]share, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, fmt.Errorf("%w: empty", errSpec)
	}
	var out []share
	total := 0
	for item := range strings.SplitSeq(spec, ",") {
		name, w, hasW := strings.Cut(strings.TrimSpace(item), "=")
		name = strings.TrimSpace(name)
		weight := 1
		if hasW {
			n, err := strconv.Atoi(strings.TrimSpace(w))
			if err != nil || n < 0 || n > 1_000_000 {
				return nil, fmt.Errorf("%w: %q: weight must be an integer 0..1000000", errSpec, item)
			}
			weight = n
		}
		if !known(name) {
			return nil, fmt.Errorf("%w: %q: unknown name %q", errSpec, item, name)
		}
		for _, s := range out {
			if s.name == name {
				return nil, fmt.Errorf("%w: %q given twice", errSpec, name)
			}
		}
		out = append(out, share{name: name, weight: weight})
		total += weight
	}
	if total == 0 {
		return nil, fmt.Errorf("%w: %q: all weights are zero", errSpec, spec)
	}
	return out, nil
}

func findProfile(name string) *profile {
	for i := range profiles {
		if profiles[i].name == name {
			return &profiles[i]
		}
	}
	return nil
}

// parseMix parses --mix, e.g. "1.3-dhe=60,1.3-ke=20,1.2-ccm8=20".
func parseMix(spec string) (mix, error) {
	shares, err := parseShares(spec, func(n string) bool { return findProfile(n) != nil })
	if err != nil {
		return mix{}, fmt.Errorf("--mix: %w (profiles: %s)", err, profileNames())
	}
	var m mix
	for _, s := range shares {
		if s.weight > 0 {
			m.entries = append(m.entries, findProfile(s.name))
			m.weights = append(m.weights, s.weight)
		}
	}
	return m, nil
}

func (m mix) String() string {
	parts := make([]string, len(m.entries))
	for i, p := range m.entries {
		parts[i] = fmt.Sprintf("%s=%d", p.name, m.weights[i])
	}
	return strings.Join(parts, ",")
}

// assign returns the profile of each of n devices by smooth weighted
// round-robin: deterministic, and every prefix of the fleet follows the
// weights as closely as integers allow, so --gen-keys and a later run with
// the same --mix agree on which device makes which handshake.
func (m mix) assign(n int) []*profile {
	out := make([]*profile, n)
	seq := newWRR(m.weights)
	for i := range out {
		out[i] = m.entries[seq.next()]
	}
	return out
}

// wrr is smooth weighted round-robin (as in nginx's upstream balancer).
type wrr struct {
	weights, current []int
	total            int
}

func newWRR(weights []int) *wrr {
	w := &wrr{weights: weights, current: make([]int, len(weights))}
	for _, x := range weights {
		w.total += x
	}
	return w
}

func (w *wrr) next() int {
	best := 0
	for i, x := range w.weights {
		w.current[i] += x
		if w.current[i] > w.current[best] {
			best = i
		}
	}
	w.current[best] -= w.total
	return best
}
