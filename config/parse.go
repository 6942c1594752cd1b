package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Load reads and parses the configuration file at path (see Parse), then
// resolves the relative paths inside it (store.path, store.tag_key_file,
// store.kek_file)
// against the directory of path. Errors from Parse keep their type under a
// prefix naming the file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	c.Store.Path = resolve(dir, c.Store.Path)
	c.Store.TagKeyFile = resolve(dir, c.Store.TagKeyFile)
	c.Store.KEKFile = resolve(dir, c.Store.KEKFile)
	if c.Sessions.Snapshot != SnapshotPostgres {
		c.Sessions.Snapshot = resolve(dir, c.Sessions.Snapshot)
	}
	return c, nil
}

func resolve(dir, path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

// Parse decodes a YAML configuration on top of Default, fills in the
// defaults that are zero values and validates the result. Unknown fields,
// values of the wrong type and invalid values are all reported together as
// a FieldErrors, in file order, with line numbers. An empty document is the
// default configuration, which fails validation for want of backends.
// Paths are returned as written; Load resolves them.
func Parse(data []byte) (*Config, error) {
	root, err := parseNode(data)
	if err != nil {
		return nil, err
	}
	idx := buildIndex(root)

	c := Default()
	var es FieldErrors
	if root != nil {
		err := decode(data, c)
		var te *yaml.TypeError
		switch {
		case errors.As(err, &te):
			for _, msg := range te.Errors {
				es = append(es, idx.decodeError(msg))
			}
		case err != nil:
			return nil, FieldErrors{syntaxError(err)}
		}
	}
	c.applyDefaults()

	if verr := c.Validate(); verr != nil && !coversAll(es) {
		decoded := make(map[string]bool, len(es))
		for _, e := range es {
			decoded[e.Field] = true
		}
		for _, e := range verr.(FieldErrors) {
			if covered(decoded, e.Field) {
				continue // already reported by the decoder, more precisely
			}
			e.Line = idx.line(e.Field)
			es = append(es, e)
		}
	}
	if len(es) > 0 {
		es.sort()
		return nil, es
	}
	return c, nil
}

// parseNode parses data into a node tree, refusing YAML syntax errors and
// a second non-empty document. It returns nil for an empty file.
func parseNode(data []byte) (root *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil { // yaml.v3 has panicked on hostile input
			root, err = nil, FieldErrors{{Msg: fmt.Sprintf("invalid yaml: %v", r)}}
		}
	}()
	if line, col, bad := invalidUTF8(data); bad {
		// yaml.v3 reports it without a position.
		return nil, FieldErrors{{Line: line, Msg: fmt.Sprintf("not valid utf-8 at column %d: the configuration is utf-8 text", col)}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil
	} else if err != nil {
		return nil, FieldErrors{syntaxError(err)}
	}
	for { // only empty documents may follow, as after a trailing "---"
		var extra yaml.Node
		err := dec.Decode(&extra)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, FieldErrors{syntaxError(err)}
		}
		if len(extra.Content) > 0 && extra.Content[0].ShortTag() != "!!null" {
			return nil, FieldErrors{{Line: extra.Line, Msg: "more than one yaml document"}}
		}
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

// decode decodes the first document of data into c, refusing unknown fields.
func decode(data []byte, c *Config) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(c)
}

var reSyntax = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func syntaxError(err error) *FieldError {
	msg := err.Error()
	if m := reSyntax.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &FieldError{Line: line, Msg: "invalid yaml: " + m[2]}
	}
	return &FieldError{Msg: "invalid yaml: " + strings.TrimPrefix(msg, "yaml: ")}
}

// coversAll reports whether a decode error concerns the document as a whole
// (say, a list where a mapping belongs), making validation meaningless.
func coversAll(es FieldErrors) bool {
	for _, e := range es {
		if e.Field == "" {
			return true
		}
	}
	return false
}

// covered reports whether field is, or is inside, a field in fields.
func covered(fields map[string]bool, field string) bool {
	for field != "" {
		if fields[field] {
			return true
		}
		i := strings.LastIndexAny(field, ".[")
		if i < 0 {
			return false
		}
		field = field[:i]
	}
	return false
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
