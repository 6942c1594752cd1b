package main

import (
	"bytes"
	"cmp"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/export"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// Key files. devsim reads what the gateway's tools write:
//
//   - the gateway's own YAML key file (package pskstore/file), parsed with
//     file.Parse and therefore held to the same RFC 9257 policy the gateway
//     applies: a file this tool accepts, the gateway loads. A file sealed at
//     rest (key_sealed entries) needs the gateway's key-encryption key:
//     DEVSIM_KEK_FILE names a file holding it, or DEVSIM_KEK holds it (hex
//     or base64), like store.kek_file and store.kek_env;
//   - the exports of `gateway psk export` (package pskstore/export): YAML
//     (a "devices" list) and CSV (a header naming the export's columns),
//     with every binding;
//   - a bare CSV, for peers other than the gateway (libcoap's -k takes one
//     key for every identity):
//
//	# comment
//	identity,key_hex,endpoint
//	device-0001,8f1c…(hex),urn:dev:0001
//
//     one device per line: a text identity (no comma), the key in hex and
//     the LwM2M endpoint name (optional: the identity when empty). The
//     header line is optional. Such a key carries no bindings, so it may
//     make any handshake of --mix, and no policy is checked.
//
// A CSV file whose header names other columns than these three is read as
// an export.

// loadKeys reads a key file, with the KEK of the environment (see above).
func loadKeys(path string) ([]pskstore.Key, error) {
	kek, err := kekFromEnv()
	if err != nil {
		return nil, err
	}
	return loadKeysKEK(path, kek)
}

// kekFromEnv reads the KEK named by DEVSIM_KEK_FILE or DEVSIM_KEK; nil when
// neither is set.
func kekFromEnv() (*sealed.KEK, error) {
	switch f, v := os.Getenv("DEVSIM_KEK_FILE"), os.Getenv("DEVSIM_KEK"); {
	case f != "" && v != "":
		return nil, errors.New("set DEVSIM_KEK_FILE or DEVSIM_KEK, not both")
	case f != "":
		return sealed.ReadKEKFile(f)
	case v != "":
		return sealed.KEKFromEnv("DEVSIM_KEK")
	}
	return nil, nil
}

// loadKeysKEK reads a key file, by its name and content: CSV (bare or an
// export) if it ends in ".csv", else YAML (an export's "devices" list, or
// the gateway's key file, opened with kek when sealed).
func loadKeysKEK(path string, kek *sealed.KEK) ([]pskstore.Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := parseKeys(data, strings.EqualFold(filepath.Ext(path), ".csv"), kek)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no keys", path)
	}
	return keys, nil
}

func parseKeys(data []byte, isCSV bool, kek *sealed.KEK) ([]pskstore.Key, error) {
	if isCSV && !exportHeader(data) {
		return parseCSVKeys(bytes.NewReader(data))
	}
	var recs []export.Record
	var err error
	switch {
	case isCSV:
		recs, err = export.ReadCSV(bytes.NewReader(data))
	case topLevel(data) == "devices":
		recs, err = export.ReadYAML(bytes.NewReader(data))
	default:
		keys, err := file.Parse(data, file.WithKEK(kek))
		if errors.Is(err, file.ErrNoKEK) {
			return nil, fmt.Errorf("%w (set DEVSIM_KEK_FILE to the gateway's store.kek_file, or DEVSIM_KEK)", err)
		}
		return keys, err
	}
	if err != nil {
		return nil, err
	}
	keys := make([]pskstore.Key, len(recs))
	for i, r := range recs {
		keys[i] = r.Key
	}
	return keys, nil
}

// exportHeader reports whether a CSV file starts (after comments) with a
// header naming more than the bare format's columns.
func exportHeader(data []byte) bool {
	cr := csv.NewReader(bytes.NewReader(data))
	cr.Comment, cr.FieldsPerRecord, cr.TrimLeadingSpace = '#', -1, true
	rec, err := cr.Read()
	if err != nil || !slices.Contains(rec, "identity") && !slices.Contains(rec, "identity_hex") {
		return false
	}
	for _, col := range rec {
		if col != "identity" && col != "key_hex" && col != "endpoint" {
			return true
		}
	}
	return false
}

// topLevel returns the first key of a YAML mapping, or "".
func topLevel(data []byte) string {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 || len(doc.Content[0].Content) == 0 {
		return ""
	}
	return doc.Content[0].Content[0].Value
}

// errCSV is wrapped by every CSV key file error.
var errCSV = errors.New("bad csv key file")

// parseCSVKeys parses the CSV format above. Errors name the line and never
// echo a key.
func parseCSVKeys(r io.Reader) ([]pskstore.Key, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	var keys []pskstore.Key
	seen := make(map[string]int)
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("%w: line %d: %v", errCSV, pe.Line, pe.Err)
			}
			return nil, fmt.Errorf("%w: %v", errCSV, err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 3 && rec[0] == "identity" && rec[1] == "key_hex" {
			continue // header
		}
		if len(rec) < 2 || len(rec) > 3 {
			return nil, fmt.Errorf("%w: line %d: want identity,key_hex[,endpoint], got %d fields", errCSV, line, len(rec))
		}
		id := strings.TrimSpace(rec[0])
		if id == "" {
			return nil, fmt.Errorf("%w: line %d: empty identity", errCSV, line)
		}
		secret, err := hex.DecodeString(strings.TrimSpace(rec[1]))
		if err != nil || len(secret) == 0 {
			return nil, fmt.Errorf("%w: line %d: key_hex is not a non-empty hex string", errCSV, line)
		}
		if first, dup := seen[id]; dup {
			return nil, fmt.Errorf("%w: line %d: identity repeats line %d", errCSV, line, first)
		}
		seen[id] = line
		ep := id
		if len(rec) == 3 && strings.TrimSpace(rec[2]) != "" {
			ep = strings.TrimSpace(rec[2])
		}
		// No bindings are known: allow every handshake of the tool.
		keys = append(keys, pskstore.Key{
			Identity: []byte(id), Secret: secret, Endpoint: ep,
			Versions: pskstore.DTLS12 | pskstore.DTLS13, Modes: pskstore.ModeDHE | pskstore.ModeKE, Legacy: true,
		})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys", errCSV)
	}
	return keys, nil
}

// genKeys makes n fresh keys for a fleet with mix m: identity loadNNNNNN,
// endpoint urn:dev:loadNNNNNN, 32 random bytes from crypto/rand (R2), and
// the bindings the device's handshake needs (psk_ke listed for 1.3-ke,
// legacy for DTLS 1.2 plain PSK), device i getting the profile a run with
// the same --mix gives device i.
func genKeys(n int, m mix, serverName string) ([]pskstore.Key, error) {
	keys := make([]pskstore.Key, n)
	for i, p := range m.assign(n) {
		secret, err := pskstore.GenerateSecret(32)
		if err != nil {
			return nil, err
		}
		k := pskstore.Key{
			Identity:   fmt.Appendf(nil, "load%06d", i+1),
			Secret:     secret,
			Endpoint:   fmt.Sprintf("urn:dev:load%06d", i+1),
			ServerName: serverName,
		}
		p.policy(&k)
		k.Normalize()
		keys[i] = k
	}
	return keys, nil
}

// writeKeys writes keys to path: CSV if the name ends in ".csv", else the
// YAML key file (atomically, mode 0600, through file.Save, which refuses a
// set the gateway would refuse).
func writeKeys(path string, keys []pskstore.Key) error {
	if !strings.EqualFold(filepath.Ext(path), ".csv") {
		return file.Save(path, keys)
	}
	var b bytes.Buffer
	b.WriteString("identity,key_hex,endpoint\n")
	for _, k := range keys {
		if bytes.ContainsAny(k.Identity, ",\"\r\n#") {
			return fmt.Errorf("identity not representable in csv")
		}
		fmt.Fprintf(&b, "%s,%s,%s\n", k.Identity, hex.EncodeToString(k.Secret), k.Endpoint)
	}
	return os.WriteFile(path, b.Bytes(), 0o600)
}

// pickKeys gives each device a key whose bindings allow its handshake.
// Profiles are served most constrained first (fewest fitting keys); within
// one, device i gets key i when it fits and is free (a --gen-keys file with
// the same --mix), then the next free key that fits, then, if none is left,
// a used one. It returns how many devices share a key with another: the
// gateway keeps one session per identity by default, so shared keys
// replace each other's sessions.
func pickKeys(keys []pskstore.Key, profs []*profile) (picked []int, shared int, err error) {
	picked = make([]int, len(profs))
	used := make([]bool, len(keys))
	groups := map[*profile][]int{} // devices by profile, in order
	var order []*profile
	for i, p := range profs {
		if _, ok := groups[p]; !ok {
			order = append(order, p)
		}
		groups[p] = append(groups[p], i)
	}
	fits := map[*profile]int{}
	for _, p := range order {
		for _, k := range keys {
			if p.allows(k) {
				fits[p]++
			}
		}
		if fits[p] == 0 {
			return nil, 0, fmt.Errorf("no key in the key file allows handshake %s (1.3-ke needs modes [psk_ke], DTLS 1.2 plain PSK needs legacy: true; see --gen-keys)", p.name)
		}
	}
	slices.SortStableFunc(order, func(a, b *profile) int { return cmp.Compare(fits[a], fits[b]) })
	for _, p := range order {
		var rest []int
		for _, i := range groups[p] {
			if i < len(keys) && !used[i] && p.allows(keys[i]) {
				picked[i], used[i] = i, true
			} else {
				rest = append(rest, i)
			}
		}
		next, reuse := 0, 0
		for _, i := range rest {
			for next < len(keys) && (used[next] || !p.allows(keys[next])) {
				next++
			}
			if next < len(keys) {
				picked[i], used[next] = next, true
				continue
			}
			for !p.allows(keys[reuse%len(keys)]) { // ends: fits[p] > 0
				reuse++
			}
			picked[i] = reuse % len(keys)
			reuse++
			shared++
		}
	}
	return picked, shared, nil
}
