package file

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// maxReported bounds the problems reported for one file.
const maxReported = 25

// entry is one parsed item of the keys list with the positions needed to
// report problems.
type entry struct {
	index    int
	ok       bool // parsed without a problem
	key      pskstore.Key
	line     int            // line of the entry
	fields   map[string]int // YAML field -> line
	idField  string         // "identity" or "identity_hex"
	keyField string         // "key_hex", "key_base64" or "key_sealed"
	sealed   []byte         // the decoded key_sealed value
}

// Parse decodes a key file (the format of the package doc) and checks the
// keys with pskstore.CheckKeys under the policy of WithPolicy. Keys come back
// normalized (pskstore.Key.Normalize), in file order. Every problem found,
// up to 25, is reported as a *ParseError, joined with errors.Join; SHOULD
// findings are not errors (Open logs them). Parse never panics on any input.
func Parse(data []byte, opts ...Option) ([]pskstore.Key, error) {
	o := newOptions(opts)
	entries, _, err := parse("", data, o)
	if err != nil {
		return nil, err
	}
	return keysOf(entries), nil
}

func keysOf(entries []entry) []pskstore.Key {
	keys := make([]pskstore.Key, len(entries))
	for i, e := range entries {
		keys[i] = e.key
	}
	return keys
}

// parse is Parse with a path for messages; it also returns the SHOULD
// findings as *ParseError.
func parse(path string, data []byte, o options) (entries []entry, warnings []*ParseError, err error) {
	defer func() {
		if r := recover(); r != nil { // the YAML library is not ours; never crash a reload
			entries, warnings = nil, nil
			err = &ParseError{Path: path, Entry: -1, Err: fmt.Errorf("%w: parser failure", ErrSyntax)}
		}
	}()
	p := &parser{path: path, kek: o.kek, plaintext: o.plaintext}
	root := p.document(data)
	if root != nil {
		entries = p.entries(root)
	}
	warnings = p.policy(entries, o.policy) // even after other problems, to report all at once
	if len(p.errs) > 0 {
		return nil, nil, errors.Join(p.errs...)
	}
	return entries, warnings, nil
}

type parser struct {
	path      string
	kek       *sealed.KEK // opens key_sealed; nil refuses it
	plaintext bool        // key_hex and key_base64 allowed although kek is set
	errs      []error     // the first maxReported problems
	problems  int         // all problems, reported or not
}

// fail records a problem; entry -1 and field "" for file-level problems.
func (p *parser) fail(line, entry int, field string, err error) {
	p.problems++
	switch {
	case len(p.errs) < maxReported:
		p.errs = append(p.errs, &ParseError{Path: p.path, Line: line, Entry: entry, Field: field, Err: err})
	case len(p.errs) == maxReported:
		p.errs = append(p.errs, &ParseError{Path: p.path, Entry: -1, Err: fmt.Errorf("%w: more problems not shown", ErrSchema)})
	}
}

func (p *parser) schema(line, entry int, field, format string, args ...any) {
	p.fail(line, entry, field, fmt.Errorf("%w: "+format, append([]any{ErrSchema}, args...)...))
}

var yamlLine = regexp.MustCompile(`^line (\d+): `)

// document parses data as exactly one YAML document and returns its "keys"
// sequence.
func (p *parser) document(data []byte) *yaml.Node {
	if len(bytes.TrimSpace(data)) == 0 {
		// An empty file is refused rather than read as "no keys": an editor
		// that truncates before writing must not revoke every identity.
		p.schema(0, -1, "", "file is empty; write \"keys: []\" for a store without keys")
		return nil
	}
	if line, col, bad := invalidUTF8(data); bad {
		// yaml.v3 reports it without a position; the byte is not shown:
		// it may be part of a key.
		p.fail(line, -1, "", fmt.Errorf("%w: not valid utf-8 at column %d: the key file is utf-8 text", ErrSyntax, col))
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err == io.EOF {
		p.schema(0, -1, "", "file has no yaml document; write \"keys: []\" for a store without keys")
		return nil
	} else if err != nil {
		line, msg := 0, strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = msg[len(m[0]):]
		}
		p.fail(line, -1, "", fmt.Errorf("%w: %s", ErrSyntax, msg))
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		p.schema(extra.Line, -1, "", "more than one yaml document")
		return nil
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		p.schema(doc.Line, -1, "", "top level must be a mapping with a keys list")
		return nil
	}
	top := doc.Content[0]
	var keys *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		switch {
		case k.Value != "keys":
			p.unknownField(k.Line, -1, k.Value, func(f string) bool { return f == "keys" })
		case keys != nil:
			p.schema(k.Line, -1, "keys", "field given twice (also on line %d)", keys.Line)
		case v.Kind != yaml.SequenceNode:
			p.schema(v.Line, -1, "keys", "must be a list; write \"keys: []\" for a store without keys")
		default:
			keys = v
		}
	}
	if keys == nil && len(p.errs) == 0 {
		p.schema(top.Line, -1, "keys", "missing; write \"keys: []\" for a store without keys")
	}
	return keys
}

// unknownField reports a field name that is not in known. The name is shown
// only when it is a near miss of a known field ("endpont" for "endpoint"):
// anything else may be a key pasted in the wrong place (R9).
func (p *parser) unknownField(line, entry int, name string, known func(string) bool) {
	best, bestDist := "", 3
	for _, f := range fieldNames {
		if d := distance(name, f); d < bestDist && known(f) {
			best, bestDist = f, d
		}
	}
	if best == "" {
		p.schema(line, entry, "", "unknown field (name not repeated here: it may be a key)")
		return
	}
	p.schema(line, entry, name, "unknown field, did you mean %s?", best)
}

// distance is the Levenshtein distance of a and b, stopping early (at 3)
// for strings of very different lengths.
func distance(a, b string) int {
	if len(a) > len(b)+2 || len(b) > len(a)+2 {
		return 3
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// entries parses every item, including those with problems, so that
// positions in the result are positions in the file.
func (p *parser) entries(seq *yaml.Node) []entry {
	entries := make([]entry, len(seq.Content))
	for i, n := range seq.Content {
		entries[i] = p.entry(i, n)
	}
	return entries
}

// policy runs the RFC 9257 policy over the keys and records MUST findings as
// errors at the line of the field at fault; it returns the SHOULD findings.
// Findings on entries that did not parse are dropped, but their partial keys
// take part, so a duplicate of one is still found.
func (p *parser) policy(entries []entry, policy pskstore.Options) []*ParseError {
	var warnings []*ParseError
	for _, f := range pskstore.CheckKeys(keysOf(entries), policy) {
		e := entries[f.Index]
		if !e.ok {
			continue // already reported; its partial key would only add noise
		}
		field := e.yamlField(f.Field)
		line, ok := e.fields[field]
		if !ok {
			line = e.line
		}
		if f.Severity == pskstore.SeverityMust {
			p.fail(line, e.index, field, f)
		} else {
			warnings = append(warnings, &ParseError{Path: p.path, Line: line, Entry: e.index, Field: field, Err: f})
		}
	}
	return warnings
}

// yamlFields maps the pskstore.Key field named in a finding to its YAML
// field; Identity and Secret depend on the spelling the entry used.
var yamlFields = map[string]string{
	"Hash": "hash", "Endpoint": "endpoint", "ServerName": "server_name", "Backend": "backend",
	"Versions": "versions", "Modes": "modes", "Legacy": "legacy", "AllowLowEntropy": "allow_low_entropy",
	"Group": "group", "ImportContext": "import_context_hex",
}

func (e *entry) yamlField(keyField string) string {
	switch keyField {
	case "Identity":
		return e.idField
	case "Secret":
		return e.keyField
	}
	return yamlFields[keyField]
}

// decodeHex decodes hex without echoing the input in errors (it may be a key).
func decodeHex(s string) ([]byte, bool) {
	b, err := hex.DecodeString(s)
	return b, err == nil
}

// decodeBase64 decodes standard base64 with padding, without echoing input.
func decodeBase64(s string) ([]byte, bool) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	return b, err == nil
}

// invalidUTF8 returns the 1-based line and byte column of the first byte
// of data that is not valid UTF-8.
func invalidUTF8(data []byte) (line, col int, bad bool) {
	if utf8.Valid(data) {
		return 0, 0, false
	}
	line, start := 1, 0
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return line, i - start + 1, true
		}
		if r == '\n' {
			line, start = line+1, i+1
		}
		i += n
	}
	return line, 0, true
}
