package file

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

const header = "PSK store (pskstore/file). It holds secret keys: keep it mode 0600 (R9)."

// Marshal encodes keys in the key file format, in the order given, so that
// Parse returns them unchanged (normalized). It refuses, like Parse would,
// a set with a MUST finding of pskstore.CheckKeys under WithPolicy, so a
// tool cannot write a file the gateway will not load. Identities that are
// printable UTF-8 are written as identity, others as identity_hex; keys as
// key_sealed under WithKEK (a fresh nonce each time), else as key_hex; every
// binding explicitly. Parse needs the same KEK to read the result.
func Marshal(keys []pskstore.Key, opts ...Option) ([]byte, error) {
	o := newOptions(opts)
	if err := pskstore.CheckKeys(keys, o.policy).Err(); err != nil {
		return nil, fmt.Errorf("file: marshal: %w", err)
	}
	return marshal(keys, o.kek)
}

// marshal is Marshal without the policy check, which writes of the Store
// make with CheckAdd.
func marshal(keys []pskstore.Key, kek *sealed.KEK) ([]byte, error) {
	list := &yaml.Node{Kind: yaml.SequenceNode}
	for i, k := range keys {
		k.Normalize()
		n, err := entryNode(k, kek)
		if err != nil {
			return nil, fmt.Errorf("file: marshal: keys[%d]: %w", i, err)
		}
		list.Content = append(list.Content, n)
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, HeadComment: header, Content: []*yaml.Node{str("keys", 0), list}}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("file: marshal: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("file: marshal: %w", err)
	}
	return buf.Bytes(), nil
}

func entryNode(k pskstore.Key, kek *sealed.KEK) (*yaml.Node, error) {
	m := &yaml.Node{Kind: yaml.MappingNode}
	add := func(name string, v *yaml.Node) { m.Content = append(m.Content, str(name, 0), v) }
	if printable(k.Identity) {
		add("identity", str(string(k.Identity), yaml.DoubleQuotedStyle))
	} else {
		add("identity_hex", str(hex.EncodeToString(k.Identity), yaml.DoubleQuotedStyle))
	}
	if kek != nil {
		s, err := kek.Seal(k.Identity, k.Secret)
		if err != nil {
			return nil, err
		}
		add("key_sealed", str(base64.StdEncoding.EncodeToString(s), yaml.DoubleQuotedStyle))
	} else {
		add("key_hex", str(hex.EncodeToString(k.Secret), yaml.DoubleQuotedStyle))
	}
	add("hash", str(pskstore.Hash(k.Hash).String(), 0))
	for _, f := range []struct{ name, v string }{{"endpoint", k.Endpoint}, {"server_name", k.ServerName}, {"backend", k.Backend}} {
		if f.v != "" {
			add(f.name, str(f.v, yaml.DoubleQuotedStyle))
		}
	}
	add("versions", list(k.Versions.Names(), yaml.DoubleQuotedStyle))
	add("modes", list(k.Modes.Names(), 0))
	for _, f := range []struct {
		name string
		v    bool
	}{{"legacy", k.Legacy}, {"allow_low_entropy", k.AllowLowEntropy}, {"group", k.Group}} {
		if f.v {
			add(f.name, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"})
		}
	}
	if len(k.ImportContext) > 0 {
		add("import_context_hex", str(hex.EncodeToString(k.ImportContext), yaml.DoubleQuotedStyle))
	}
	return m, nil
}

// list is a flow sequence of names, e.g. ["1.3", "1.2"].
func list(names []string, style yaml.Style) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, name := range names {
		n.Content = append(n.Content, str(name, style))
	}
	return n
}

func str(v string, style yaml.Style) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v, Style: style}
}

// printable reports whether an identity can be written as YAML text and read
// back byte for byte: valid UTF-8 of printable characters.
func printable(id []byte) bool {
	if !utf8.Valid(id) {
		return false
	}
	for _, r := range string(id) {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// Save writes keys (see Marshal; sealed under WithKEK) to path atomically:
// nothing is written unless every key passes Marshal, then to a temporary file in
// the same directory with mode 0600, synced, then renamed over path, and the
// directory synced. Readers, including a Store watching path, see the old or
// the new file, never a mix. If path is a symbolic link, the link itself is
// replaced; for a Kubernetes ConfigMap, update the ConfigMap instead.
func Save(path string, keys []pskstore.Key, opts ...Option) error {
	data, err := Marshal(keys, opts...)
	if err != nil {
		return err
	}
	if err := writeAtomic(path, data); err != nil {
		return fmt.Errorf("file: save: %w", err)
	}
	return nil
}

// writeAtomic writes data to a temporary file next to path, mode 0600,
// syncs it, renames it over path and syncs the directory.
func writeAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil { // make the rename durable; best effort
		d.Sync()
		d.Close()
	}
	return nil
}
