package file

import (
	"crypto"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// entry parses item i of the keys list. It reports every problem of the entry
// and sets e.ok only if there was none.
func (p *parser) entry(i int, n *yaml.Node) (e entry) {
	e = entry{index: i, line: n.Line, fields: make(map[string]int)}
	if n.Kind != yaml.MappingNode {
		p.schema(n.Line, i, "", "must be a mapping")
		return e
	}
	before := p.problems
	for j := 0; j+1 < len(n.Content); j += 2 {
		name, v := n.Content[j], n.Content[j+1]
		field := name.Value
		if first, dup := e.fields[field]; dup {
			p.schema(name.Line, i, field, "field given twice (also on line %d)", first)
			continue
		}
		if _, known := fieldParsers[field]; !known {
			p.unknownField(name.Line, i, field, func(f string) bool { _, ok := fieldParsers[f]; return ok })
			continue
		}
		e.fields[field] = name.Line
		fv := fieldValue{p: p, entry: i, field: field, node: v}
		fieldParsers[field](&fv, &e)
	}
	e.idField = p.oneOf(&e, "identity", "identity_hex")
	e.keyField = p.oneOf(&e, "key_hex", "key_base64", "key_sealed")
	if p.problems == before {
		p.unseal(&e)
	}
	e.key.Normalize()
	e.ok = p.problems == before
	return e
}

// oneOf checks that exactly one of the spellings of a field is present and
// returns it (the first present, or the first name when none is, for
// messages).
func (p *parser) oneOf(e *entry, names ...string) string {
	var present []string
	for _, n := range names {
		if _, ok := e.fields[n]; ok {
			present = append(present, n)
		}
	}
	switch len(present) {
	case 0:
		list := strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
		p.schema(e.line, e.index, names[0], "missing: exactly one of %s is required", list)
		return names[0]
	case 1:
	default:
		p.schema(e.fields[present[1]], e.index, present[1], "give either %s or %s, not both", present[0], present[1])
	}
	return present[0]
}

// unseal opens a key_sealed entry with the store's KEK, and refuses a
// plaintext key in a store with a KEK unless plaintext keys are allowed.
// Errors name the entry and field, never the key.
func (p *parser) unseal(e *entry) {
	line := e.fields[e.keyField]
	switch {
	case e.keyField == "key_sealed" && p.kek == nil:
		p.fail(line, e.index, e.keyField, fmt.Errorf("%w: configure the key-encryption key the store was sealed with", ErrNoKEK))
	case e.keyField == "key_sealed":
		key, err := p.kek.Open(e.key.Identity, e.sealed)
		if err != nil {
			p.fail(line, e.index, e.keyField, err)
			return
		}
		e.key.Secret = key
	case p.kek != nil && !p.plaintext:
		p.fail(line, e.index, e.keyField, fmt.Errorf("%w: seal it (gateway psk rekey) or explicitly allow insecure plaintext keys", ErrPlaintextKey))
	}
}

// fieldValue is the value node of one field, with what is needed to report
// a problem with it. Problems never echo the value: it may be a key.
type fieldValue struct {
	p     *parser
	entry int
	field string
	node  *yaml.Node
}

func (f *fieldValue) fail(format string, args ...any) {
	f.p.schema(f.node.Line, f.entry, f.field, format, args...)
}

// text returns a scalar as the text written in the file. Plain scalars that
// YAML would read as numbers or dates keep their spelling; null, booleans,
// and explicit tags other than !!str are refused.
func (f *fieldValue) text() (string, bool) {
	n := f.node
	explicit := n.Style&yaml.TaggedStyle != 0
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" || n.Tag == "!!bool" || n.Tag == "!!binary" || (explicit && n.Tag != "!!str") {
		f.fail("must be a string")
		return "", false
	}
	return n.Value, true
}

func (f *fieldValue) bool() bool {
	if f.node.Kind != yaml.ScalarNode || f.node.Tag != "!!bool" {
		f.fail("must be true or false")
		return false
	}
	var b bool
	if err := f.node.Decode(&b); err != nil {
		f.fail("must be true or false")
	}
	return b
}

func (f *fieldValue) bytes(decode func(string) ([]byte, bool), what string) []byte {
	s, ok := f.text()
	if !ok {
		return nil
	}
	b, ok := decode(s)
	if !ok {
		f.fail("invalid %s", what)
	}
	return b
}

// list returns the items of a non-empty sequence of scalars.
func (f *fieldValue) list() []string {
	if f.node.Kind != yaml.SequenceNode || len(f.node.Content) == 0 {
		f.fail("must be a non-empty list")
		return nil
	}
	out := make([]string, 0, len(f.node.Content))
	for _, item := range f.node.Content {
		v := fieldValue{p: f.p, entry: f.entry, field: f.field, node: item}
		if s, ok := v.text(); ok {
			out = append(out, s)
		}
	}
	return out
}

// fieldNames lists every field of the format, for suggestions.
var fieldNames = []string{"keys", "identity", "identity_hex", "key_hex", "key_base64", "key_sealed", "hash", "endpoint",
	"server_name", "backend", "versions", "modes", "legacy", "allow_low_entropy", "group", "import_context_hex"}

// fieldParsers knows every field of an entry; any other field is refused.
var fieldParsers = map[string]func(f *fieldValue, e *entry){
	"identity": func(f *fieldValue, e *entry) {
		if s, ok := f.text(); ok {
			e.key.Identity = []byte(s)
		}
	},
	"identity_hex": func(f *fieldValue, e *entry) { e.key.Identity = f.bytes(decodeHex, "hex") },
	"key_hex":      func(f *fieldValue, e *entry) { e.key.Secret = f.bytes(decodeHex, "hex") },
	"key_base64": func(f *fieldValue, e *entry) {
		e.key.Secret = f.bytes(decodeBase64, "base64 (standard alphabet, padded)")
	},
	"key_sealed": func(f *fieldValue, e *entry) {
		e.sealed = f.bytes(decodeBase64, "base64 (standard alphabet, padded)")
	},
	"hash": func(f *fieldValue, e *entry) {
		s, ok := f.text()
		var h pskstore.Hash
		if !ok {
			return
		}
		if err := h.UnmarshalText([]byte(s)); err != nil || s == "" {
			f.fail("unknown hash, use sha256 or sha384")
			return
		}
		e.key.Hash = crypto.Hash(h)
	},
	"endpoint":    func(f *fieldValue, e *entry) { e.key.Endpoint, _ = f.text() },
	"server_name": func(f *fieldValue, e *entry) { e.key.ServerName, _ = f.text() },
	"backend":     func(f *fieldValue, e *entry) { e.key.Backend, _ = f.text() },
	"versions": func(f *fieldValue, e *entry) {
		for _, s := range f.list() {
			var v pskstore.Versions
			if err := v.UnmarshalText([]byte(s)); err != nil || v == 0 || strings.Contains(s, ",") {
				f.fail("unknown version, use \"1.2\" or \"1.3\"")
				continue
			}
			e.key.Versions |= v
		}
	},
	"modes": func(f *fieldValue, e *entry) {
		for _, s := range f.list() {
			var m pskstore.Modes
			if err := m.UnmarshalText([]byte(s)); err != nil || m == 0 || strings.Contains(s, ",") {
				f.fail("unknown mode, use psk_dhe_ke or psk_ke")
				continue
			}
			e.key.Modes |= m
		}
	},
	"legacy":             func(f *fieldValue, e *entry) { e.key.Legacy = f.bool() },
	"allow_low_entropy":  func(f *fieldValue, e *entry) { e.key.AllowLowEntropy = f.bool() },
	"group":              func(f *fieldValue, e *entry) { e.key.Group = f.bool() },
	"import_context_hex": func(f *fieldValue, e *entry) { e.key.ImportContext = f.bytes(decodeHex, "hex") },
}
