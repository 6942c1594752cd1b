package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// entry is one node of the parsed file under its dotted field path.
type entry struct {
	path    string // "dtls.mtu", "listeners[0].address"
	key     string // the mapping key, "" for a sequence item
	keyLine int    // line of the key, or of the item
	val     *yaml.Node
}

// index maps field paths to the lines of the file, so errors can carry
// line numbers.
type index struct {
	entries []entry        // in document order
	byPath  map[string]int // path -> first entry
	byKey   map[keyPos]int // key and its line -> entry
	byLine  map[int][]int  // line where a value starts -> entries
}

type keyPos struct {
	line int
	key  string
}

func buildIndex(root *yaml.Node) *index {
	idx := &index{byPath: make(map[string]int), byKey: make(map[keyPos]int), byLine: make(map[int][]int)}
	if root != nil {
		idx.walk("", root)
	}
	for i, e := range idx.entries {
		if _, ok := idx.byPath[e.path]; !ok {
			idx.byPath[e.path] = i
		}
		if _, ok := idx.byKey[keyPos{e.keyLine, e.key}]; !ok && e.key != "" {
			idx.byKey[keyPos{e.keyLine, e.key}] = i
		}
		idx.byLine[e.val.Line] = append(idx.byLine[e.val.Line], i)
	}
	return idx
}

// walk records the children of n. Aliases are not followed: an error in
// aliased content gets the line of the nearest enclosing field.
func (idx *index) walk(path string, n *yaml.Node) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			idx.entries = append(idx.entries, entry{path: p, key: k.Value, keyLine: k.Line, val: v})
			idx.walk(p, v)
		}
	case yaml.SequenceNode:
		for i, v := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			idx.entries = append(idx.entries, entry{path: p, keyLine: v.Line, val: v})
			idx.walk(p, v)
		}
	}
}

// line returns the line of field, or of its nearest enclosing field present
// in the file, or 0.
func (idx *index) line(field string) int {
	for field != "" {
		if i, ok := idx.byPath[field]; ok {
			return idx.entries[i].keyLine
		}
		i := strings.LastIndexAny(field, ".[")
		if i < 0 {
			break
		}
		field = field[:i]
	}
	return 0
}

var (
	reUnknown = regexp.MustCompile(`(?s)^line (\d+): field (.*) not found in type (\S+)$`)
	reSetTwic = regexp.MustCompile(`(?s)^line (\d+): field (.*) already set in type \S+$`)
	reDupKey  = regexp.MustCompile(`(?s)^line (\d+): mapping key (".*") already defined at line (\d+)$`)
	reType    = regexp.MustCompile("(?s)^line (\\d+): cannot unmarshal (!!\\S+)(?: `(.*)`)? into (\\S+)$")
)

// decodeError turns one message of a *yaml.TypeError into a FieldError
// naming the field by its path.
func (idx *index) decodeError(msg string) *FieldError {
	if m := reUnknown.FindStringSubmatch(msg); m != nil {
		line := atoi(m[1])
		msg := "unknown field"
		if s := suggest(m[3], m[2]); s != "" {
			msg += ", did you mean " + s + "?"
		}
		return &FieldError{Field: idx.keyAt(line, m[2]), Msg: msg, Line: line}
	}
	if m := reSetTwic.FindStringSubmatch(msg); m != nil {
		line := atoi(m[1])
		return &FieldError{Field: idx.keyAt(line, m[2]), Msg: "field set twice", Line: line}
	}
	if m := reDupKey.FindStringSubmatch(msg); m != nil {
		line := atoi(m[1])
		key, err := strconv.Unquote(m[2])
		if err != nil {
			key = m[2]
		}
		return &FieldError{Field: idx.keyAt(line, key), Msg: "duplicate key, first at line " + m[3], Line: line}
	}
	if m := reType.FindStringSubmatch(msg); m != nil {
		line := atoi(m[1])
		e := &FieldError{Line: line, Msg: "must be " + describe(m[4])}
		if ent, ok := idx.valueAt(line, m[2], strings.TrimSuffix(m[3], "...")); ok {
			e.Field = ent.path
			switch ent.val.Kind {
			case yaml.ScalarNode:
				e.Value = ent.val.Value
			case yaml.MappingNode:
				e.Msg += ", not a mapping"
			case yaml.SequenceNode:
				e.Msg += ", not a list"
			}
		} else if m[3] != "" {
			e.Value = m[3]
		}
		return e
	}
	e := &FieldError{Msg: msg}
	if i := strings.Index(msg, ": "); i > 0 && strings.HasPrefix(msg, "line ") {
		e.Line, e.Msg = atoi(msg[len("line "):i]), msg[i+2:]
	}
	return e
}

// keyAt returns the path of the mapping key written at line, or key itself.
func (idx *index) keyAt(line int, key string) string {
	if i, ok := idx.byKey[keyPos{line, key}]; ok {
		return idx.entries[i].path
	}
	return key
}

// valueAt returns the shallowest entry whose value starts at line, has the
// kind tag names and whose value starts with prefix.
func (idx *index) valueAt(line int, tag, prefix string) (entry, bool) {
	kind := yaml.ScalarNode
	switch tag {
	case "!!map":
		kind = yaml.MappingNode
	case "!!seq":
		kind = yaml.SequenceNode
	}
	for _, i := range idx.byLine[line] {
		if e := idx.entries[i]; e.val.Kind == kind && strings.HasPrefix(e.val.Value, prefix) {
			return e, true
		}
	}
	return entry{}, false
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// wants maps the Go type names in yaml.v3 messages to what the file should
// hold instead, built from the Config type.
var wants = func() map[string]string {
	m := make(map[string]string)
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		if _, ok := m[t.String()]; ok {
			return
		}
		m[t.String()] = want(t)
		switch t.Kind() {
		case reflect.Slice, reflect.Map, reflect.Pointer:
			add(t.Elem())
		case reflect.Struct:
			for i := range t.NumField() {
				add(t.Field(i).Type)
			}
		}
	}
	add(reflect.TypeFor[Config]())
	return m
}()

func want(t reflect.Type) string {
	if t == reflect.TypeFor[Duration]() {
		return `a duration like "10s" or "75m"`
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

func describe(typeName string) string {
	if w, ok := wants[typeName]; ok {
		return w
	}
	return typeName
}
