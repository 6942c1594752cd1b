// Package export writes and reads keys with their PLAINTEXT key material in
// the interchange formats of `gateway psk export` and `gateway psk add
// --from-csv`: CSV and YAML, for device provisioning systems and test tools
// (cmd/devsim reads them). Every field of a pskstore.Key round-trips, in
// the text forms of package pskstore ("1.3,1.2", "psk_dhe_ke", "sha256").
//
// The key material is in the clear: whoever holds an export holds the keys.
// Errors name lines, rows and columns, never a cell's content (it may be a
// key). The package does not own the key store's own file format
// (pskstore/file) nor the policy: a record read is checked when it is
// written to a store.
package export

import (
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// Columns are the CSV columns WriteCSV writes, in order; ReadCSV also
// takes key_base64 instead of key_hex. They are the field names of the
// YAML format too.
var Columns = []string{"identity", "identity_hex", "key_hex", "hash", "endpoint", "server_name", "backend",
	"versions", "modes", "legacy", "allow_low_entropy", "group", "import_context_hex"}

// MaxRecords bounds what ReadCSV and ReadYAML read.
const MaxRecords = 1_000_000

// ErrFormat is wrapped by every error of a malformed export.
var ErrFormat = errors.New("export")

// Record is one key read from an export and the line it was read from.
type Record struct {
	Line int
	Key  pskstore.Key
}

// RecordError is a record that does not decode.
type RecordError struct {
	Line     int    // 1-based line of the record
	Identity []byte // the record's identity, when it decoded
	Err      error  // what is wrong; never shows a key
}

func (e *RecordError) Error() string {
	if len(e.Identity) > 0 {
		return fmt.Sprintf("line %d: identity %s: %v", e.Line, Show(e.Identity), e.Err)
	}
	return fmt.Sprintf("line %d: %v", e.Line, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }

// RecordErrors is every record of an export that does not decode, out of
// Total records: an import is all or nothing, so they are all reported.
type RecordErrors struct {
	Errs  []*RecordError
	Total int
}

func (e *RecordErrors) Error() string {
	return fmt.Sprintf("%d of %d records do not decode; first: %v", len(e.Errs), e.Total, e.Errs[0])
}

// Unwrap returns ErrFormat.
func (e *RecordErrors) Unwrap() error { return ErrFormat }

// Show renders an identity for people: printable UTF-8 quoted, anything
// else as hex:…, so control characters never reach a terminal.
func Show(id []byte) string {
	if Printable(id) {
		return fmt.Sprintf("%q", id)
	}
	return "hex:" + hex.EncodeToString(id)
}

// Printable reports whether an identity is non-empty, valid UTF-8 of
// printable characters: one an export writes as identity, not identity_hex.
func Printable(id []byte) bool {
	if len(id) == 0 || !utf8.Valid(id) {
		return false
	}
	for _, r := range string(id) {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// fields is a Key in the export's text form, as the columns name them.
func fields(k pskstore.Key) map[string]string {
	k.Normalize()
	f := map[string]string{
		"key_hex": hex.EncodeToString(k.Secret), "hash": pskstore.Hash(k.Hash).String(),
		"endpoint": k.Endpoint, "server_name": k.ServerName, "backend": k.Backend,
		"versions": k.Versions.String(), "modes": k.Modes.String(),
		"legacy": flag(k.Legacy), "allow_low_entropy": flag(k.AllowLowEntropy), "group": flag(k.Group),
		"import_context_hex": hex.EncodeToString(k.ImportContext),
	}
	if Printable(k.Identity) {
		f["identity"] = string(k.Identity)
	} else {
		f["identity_hex"] = hex.EncodeToString(k.Identity)
	}
	return f
}

func flag(b bool) string {
	if b {
		return "true"
	}
	return ""
}

// key decodes the text form of one record; get returns a field, "" when
// absent. Errors name the field, never its content, except identities.
func key(get func(string) string) (pskstore.Key, error) {
	var k pskstore.Key
	id, idHex := get("identity"), get("identity_hex")
	switch {
	case id != "" && idHex != "":
		return k, errors.New("give identity or identity_hex, not both")
	case id != "":
		k.Identity = []byte(id)
	case idHex != "":
		b, err := hex.DecodeString(idHex)
		if err != nil || len(b) == 0 {
			return k, errors.New("identity_hex: not valid hex")
		}
		k.Identity = b
	default:
		return k, errors.New("no identity")
	}
	kh, kb := get("key_hex"), get("key_base64")
	var err error
	switch {
	case kh != "" && kb != "":
		return k, errors.New("give key_hex or key_base64, not both")
	case kh != "":
		if k.Secret, err = hex.DecodeString(kh); err != nil {
			return k, errors.New("key_hex: not valid hex (not shown)")
		}
	case kb != "":
		if k.Secret, err = decodeBase64(kb); err != nil {
			return k, errors.New("key_base64: not valid base64 (not shown)")
		}
	default:
		return k, errors.New("no key")
	}
	k.Endpoint, k.ServerName, k.Backend = get("endpoint"), get("server_name"), get("backend")
	var h pskstore.Hash
	for _, t := range []struct {
		name string
		v    interface{ UnmarshalText([]byte) error }
	}{{"hash", &h}, {"versions", &k.Versions}, {"modes", &k.Modes}} {
		if err := t.v.UnmarshalText([]byte(List(get(t.name)))); err != nil {
			return k, fmt.Errorf("%s: %w", t.name, err)
		}
	}
	k.Hash = crypto.Hash(h)
	for _, b := range []struct {
		name string
		v    *bool
	}{{"legacy", &k.Legacy}, {"allow_low_entropy", &k.AllowLowEntropy}, {"group", &k.Group}} {
		switch strings.ToLower(get(b.name)) {
		case "", "false":
		case "true":
			*b.v = true
		default:
			return k, fmt.Errorf("%s: must be true, false or empty", b.name)
		}
	}
	if c := get("import_context_hex"); c != "" {
		if k.ImportContext, err = hex.DecodeString(c); err != nil {
			return k, errors.New("import_context_hex: not valid hex")
		}
	}
	k.Normalize()
	return k, nil
}

// List turns a list written with semicolons, bars or spaces ("1.3;1.2",
// "psk_dhe_ke psk_ke"), as spreadsheets and shells make them, into the
// comma-separated text form of pskstore.
func List(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '|' }), ",")
}

// decodeBase64 takes standard base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.Strict().DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.Strict().DecodeString(s)
}
