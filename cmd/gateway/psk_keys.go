package main

import (
	"crypto"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// bindingFlags are the flags that describe an identity and what it is bound
// to, shared by gen and add.
type bindingFlags struct {
	identity, identityHex string
	endpoint, serverName  string
	backend, hash         string
	versions, modes       string
	legacy                bool
}

func (b *bindingFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.identity, "identity", "", "PSK `identity` as text")
	fs.StringVar(&b.identityHex, "identity-hex", "", "PSK identity in `hex`, for binary identities")
	fs.StringVar(&b.endpoint, "endpoint", "", "LwM2M `endpoint` name the identity may register as (L1)")
	fs.StringVar(&b.serverName, "server-name", "", "`SNI` the identity is bound to (R5); empty: unbound")
	fs.StringVar(&b.backend, "backend", "", "backend `name`; empty: the default backend")
	fs.StringVar(&b.hash, "hash", "sha256", "DTLS 1.3 PSK `hash`: sha256 or sha384")
	fs.StringVar(&b.versions, "versions", "1.3,1.2", "DTLS `versions` allowed, comma-separated")
	fs.StringVar(&b.modes, "modes", "psk_dhe_ke", "DTLS 1.3 key-exchange `modes`, comma-separated; psk_ke only if listed (R3)")
	fs.BoolVar(&b.legacy, "legacy", false, "allow DTLS 1.2 plain-PSK suites without ECDHE (R3)")
}

// key builds the key the flags describe, without key material.
func (b *bindingFlags) key() (pskstore.Key, error) {
	var k pskstore.Key
	var err error
	if k.Identity, err = identityFlags(b.identity, b.identityHex); err != nil {
		return k, err
	}
	if b.endpoint == "" {
		return k, usageError{"--endpoint is required: the LwM2M endpoint name the identity may register as (L1)"}
	}
	k.Endpoint, k.ServerName, k.Backend, k.Legacy = b.endpoint, b.serverName, b.backend, b.legacy
	if k.Hash, err = parseHash(b.hash); err != nil {
		return k, usageError{"--hash: " + err.Error()}
	}
	if k.Versions, err = parseVersions(b.versions); err != nil {
		return k, usageError{"--versions: " + err.Error()}
	}
	if k.Modes, err = parseModes(b.modes); err != nil {
		return k, usageError{"--modes: " + err.Error()}
	}
	return k, nil
}

// identityFlags reads an identity given as --identity TEXT or
// --identity-hex HEX.
func identityFlags(text, hexID string) ([]byte, error) {
	switch {
	case text != "" && hexID != "":
		return nil, usageError{"give --identity or --identity-hex, not both"}
	case text != "":
		return []byte(text), nil
	case hexID != "":
		id, err := hex.DecodeString(hexID)
		if err != nil || len(id) == 0 {
			return nil, usageError{"--identity-hex is not valid hex"}
		}
		return id, nil
	}
	return nil, usageError{"--identity ID (or --identity-hex HEX) is required"}
}

func parseHash(s string) (crypto.Hash, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "sha256":
		return crypto.SHA256, nil
	case "sha384":
		return crypto.SHA384, nil
	}
	return 0, fmt.Errorf("unknown hash %q, use sha256 or sha384", s)
}

// listItems splits a list written with commas, semicolons or spaces.
func listItems(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '|' })
}

func parseVersions(s string) (pskstore.Versions, error) {
	var v pskstore.Versions
	for _, item := range listItems(s) {
		switch item {
		case "1.2":
			v |= pskstore.DTLS12
		case "1.3":
			v |= pskstore.DTLS13
		default:
			return 0, fmt.Errorf("unknown version %q, use 1.3 and/or 1.2", item)
		}
	}
	return v, nil
}

func parseModes(s string) (pskstore.Modes, error) {
	var m pskstore.Modes
	for _, item := range listItems(s) {
		switch item {
		case "psk_dhe_ke":
			m |= pskstore.ModeDHE
		case "psk_ke":
			m |= pskstore.ModeKE
		default:
			return 0, fmt.Errorf("unknown mode %q, use psk_dhe_ke and/or psk_ke", item)
		}
	}
	return m, nil
}

func hashName(h crypto.Hash) string {
	if h == crypto.SHA384 {
		return "sha384"
	}
	return "sha256"
}

// checkBackend refuses a backend the gateway's configuration does not
// declare (with --store there is nothing to check against).
func (ks *keyStore) checkBackend(k pskstore.Key) error {
	if ks.cfg == nil || k.Backend == "" {
		return nil
	}
	if _, ok := ks.cfg.Backends[k.Backend]; !ok {
		return fmt.Errorf("backend %q is not declared in the configuration (declared: %s)", k.Backend, strings.Join(ks.cfg.BackendNames(), ", "))
	}
	return nil
}

// checkNew runs checkNew with the store's policy and prints the SHOULD
// findings as warnings. existing is what the backend has loaded
// (storeAdmin.loaded), less the identity a change replaces.
func (ks *keyStore) checkNew(c *pskContext, existing, added []pskstore.Key, where func(i int) string) error {
	warnings, err := checkNew(ks.policy, existing, added, where)
	printWarnings(c.stderr, warnings)
	return err
}

// maxProblems bounds the problems listed when new keys are refused.
const maxProblems = 25

// checkNew checks keys about to join existing: duplicate identities and key
// material (R7, R4), then every RFC 9257 rule (pskstore.CheckKeys). where
// names a new key in messages ("line 4"); nil names it by its identity only.
// It returns the SHOULD findings as warnings, and an error listing every
// MUST problem. Messages never carry key material.
func checkNew(policy pskstore.Options, existing, added []pskstore.Key, where func(i int) string) (warnings []string, err error) {
	if where == nil {
		where = func(int) string { return "" }
	}
	label := func(i int) string {
		if w := where(i); w != "" {
			return w + ": identity " + showID(added[i].Identity)
		}
		return "identity " + showID(added[i].Identity)
	}
	fp := pskstore.NewFingerprinter(nil)
	existingID := make(map[string]bool, len(existing))
	addedID := make(map[string]int, len(added))
	byKey := make(map[[32]byte]string, len(existing)+len(added))
	for _, k := range existing {
		existingID[string(k.Identity)] = true
		byKey[fp.Fingerprint(k.Secret)] = "existing identity " + showID(k.Identity)
	}
	var problems []string
	for i, k := range added {
		if existingID[string(k.Identity)] {
			problems = append(problems, label(i)+": already exists (rotate replaces its key, revoke removes it)")
			continue
		}
		if j, dup := addedID[string(k.Identity)]; dup {
			problems = append(problems, label(i)+": given twice, also on "+where(j))
			continue
		}
		addedID[string(k.Identity)] = i
		if len(k.Secret) == 0 {
			continue
		}
		p := fp.Fingerprint(k.Secret)
		if other, dup := byKey[p]; dup {
			problems = append(problems, label(i)+": policy R4: same key material as "+other+" (one key, one client and one server)")
			continue
		}
		byKey[p] = strings.TrimSpace(where(i) + " (identity " + showID(k.Identity) + ")")
	}
	if len(problems) == 0 {
		all := slices.Concat(existing, added)
		for _, f := range pskstore.CheckKeys(all, policy) {
			i := f.Index - len(existing)
			if i < 0 {
				continue // the store's own findings are audit's business
			}
			msg := fmt.Sprintf("%s: %v", label(i), f)
			if f.Rule == "R2" && f.Field == "Secret" {
				msg += " (--allow-low-entropy, or the allow_low_entropy column, accepts it for this identity, never with psk_ke or legacy; better, gateway psk gen makes a random key)"
			}
			if f.Severity == pskstore.SeverityMust {
				problems = append(problems, msg)
			} else {
				warnings = append(warnings, msg)
			}
		}
	}
	if len(problems) == 0 {
		return warnings, nil
	}
	n := len(problems)
	if n > maxProblems {
		problems = append(problems[:maxProblems], fmt.Sprintf("… and %d more", n-maxProblems))
	}
	noun := "problem"
	if n > 1 {
		noun = "problems"
	}
	return warnings, fmt.Errorf("%d %s, nothing written:\n  %s", n, noun, strings.Join(problems, "\n  "))
}

func printWarnings(w io.Writer, warnings []string) {
	for _, m := range warnings {
		fmt.Fprintln(w, "warning: "+m)
	}
}

// printKeyBlock prints an identity and its key for the device, to stdout
// only: in hex, the text form LwM2M clients take (Zephyr's
// CONFIG_LWM2M_APP_PSK, Wakaama's lwm2mclient -k, Anjay's demo --key,
// Leshan's UI), and as a C array for firmware that embeds the bytes
// (mbedTLS' mbedtls_ssl_conf_psk, Anjay's security object, Zephyr's TLS
// credentials).
func printKeyBlock(w io.Writer, title string, k pskstore.Key) {
	fmt.Fprintf(w, "# %s\n", title)
	if printableID(k.Identity) {
		fmt.Fprintf(w, "identity      %s\n", k.Identity)
	}
	fmt.Fprintf(w, "identity_hex  %s\n", hex.EncodeToString(k.Identity))
	fmt.Fprintf(w, "key_hex       %s\n", hex.EncodeToString(k.Secret))
	fmt.Fprintf(w, "hash          %s\n", hashName(k.Hash))
	if !printableID(k.Identity) {
		fmt.Fprintf(w, "identity_c\n%s", cArray("psk_identity", k.Identity))
	}
	fmt.Fprintf(w, "key_c\n%s", cArray("psk_key", k.Secret))
}

// cArray renders b as a C array definition, eight bytes a line.
func cArray(name string, b []byte) string {
	var s strings.Builder
	fmt.Fprintf(&s, "  static const uint8_t %s[%d] = {\n", name, len(b))
	for i := 0; i < len(b); i += 8 {
		s.WriteString("     ")
		for _, c := range b[i:min(i+8, len(b))] {
			fmt.Fprintf(&s, " 0x%02x,", c)
		}
		s.WriteString("\n")
	}
	s.WriteString("  };\n")
	return s.String()
}

// errNoKey is returned when stdin or the key file holds nothing.
var errNoKey = errors.New("no key read")
