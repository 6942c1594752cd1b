package export

import (
	"bytes"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// yamlHeader starts every YAML export.
const yamlHeader = "# Device provisioning export (gateway psk export): PLAINTEXT KEYS.\n# Handle as a secret and delete it after use.\n"

// WriteYAML writes keys as YAML: a "devices" list, each item a mapping of
// the Columns that have a value.
func WriteYAML(w io.Writer, keys []pskstore.Key) error {
	list := &yaml.Node{Kind: yaml.SequenceNode}
	for _, k := range keys {
		f := fields(k)
		item := &yaml.Node{Kind: yaml.MappingNode}
		for _, c := range Columns {
			if v := f[c]; v != "" || c == "endpoint" {
				item.Content = append(item.Content, scalar(c), scalar(v))
			}
		}
		list.Content = append(list.Content, item)
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{scalar("devices"), list}}
	var buf bytes.Buffer
	buf.WriteString(yamlHeader)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }

// ReadYAML reads a YAML export. A document that is not a "devices" list of
// mappings is an error wrapping ErrFormat; devices that do not decode are
// all reported in a *RecordErrors, by the line of the item.
func ReadYAML(r io.Reader) ([]Record, error) {
	var doc struct {
		Devices []yaml.Node `yaml:"devices"`
	}
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: not a yaml export with a devices list: %s", ErrFormat, yamlMessage(err))
	}
	if len(doc.Devices) == 0 {
		return nil, fmt.Errorf("%w: no devices", ErrFormat)
	}
	if len(doc.Devices) > MaxRecords {
		return nil, fmt.Errorf("%w: more than %d devices; split the file", ErrFormat, MaxRecords)
	}
	var recs []Record
	bad := &RecordErrors{Total: len(doc.Devices)}
	for _, n := range doc.Devices {
		f := make(map[string]string)
		if n.Kind != yaml.MappingNode {
			bad.Errs = append(bad.Errs, &RecordError{Line: n.Line, Err: fmt.Errorf("not a mapping")})
			continue
		}
		var unknown string
		for i := 0; i+1 < len(n.Content); i += 2 {
			name, v := n.Content[i].Value, n.Content[i+1]
			if !known(name) {
				unknown = "unknown field (name not repeated: it may be a key)"
			}
			f[name] = v.Value
		}
		k, err := key(func(name string) string { return f[name] })
		switch {
		case unknown != "":
			bad.Errs = append(bad.Errs, &RecordError{Line: n.Line, Identity: k.Identity, Err: fmt.Errorf("%s", unknown)})
		case err != nil:
			bad.Errs = append(bad.Errs, &RecordError{Line: n.Line, Identity: k.Identity, Err: err})
		default:
			recs = append(recs, Record{Line: n.Line, Key: k})
		}
	}
	if len(bad.Errs) > 0 {
		return nil, bad
	}
	return recs, nil
}

func known(name string) bool {
	for _, c := range Columns {
		if c == name {
			return true
		}
	}
	return name == "key_base64"
}

// yamlMessage keeps yaml.v3's line numbers and drops values it quotes.
func yamlMessage(err error) string {
	if te, ok := err.(*yaml.TypeError); ok && len(te.Errors) > 0 {
		return "wrong type or unknown field at " + lineOf(te.Errors[0])
	}
	return lineOf(err.Error())
}

func lineOf(msg string) string {
	var line int
	if _, err := fmt.Sscanf(msg, "yaml: line %d:", &line); err == nil {
		return fmt.Sprintf("line %d", line)
	}
	if _, err := fmt.Sscanf(msg, "line %d:", &line); err == nil {
		return fmt.Sprintf("line %d", line)
	}
	return "an unknown line"
}
