package main

import (
	"bytes"
	"encoding/csv"
	"encoding/hex"
	"io"

	"gopkg.in/yaml.v3"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// exportColumns are the CSV columns of export: what a device needs, in a
// form add --from-csv reads back.
var exportColumns = []string{"identity", "identity_hex", "key_hex", "hash", "endpoint", "server_name"}

func exportCSV(w io.Writer, keys []pskstore.Key) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(exportColumns); err != nil {
		return err
	}
	for _, k := range keys {
		id, idHex := splitID(k.Identity)
		if err := cw.Write([]string{id, idHex, hex.EncodeToString(k.Secret), hashName(k.Hash), k.Endpoint, k.ServerName}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// splitID returns a printable identity as text, any other as hex.
func splitID(id []byte) (text, hexID string) {
	if printableID(id) {
		return string(id), ""
	}
	return "", hex.EncodeToString(id)
}

type exportDevice struct {
	Identity    string `yaml:"identity,omitempty"`
	IdentityHex string `yaml:"identity_hex,omitempty"`
	KeyHex      string `yaml:"key_hex"`
	Hash        string `yaml:"hash"`
	Endpoint    string `yaml:"endpoint"`
	ServerName  string `yaml:"server_name,omitempty"`
}

func exportYAML(w io.Writer, keys []pskstore.Key) error {
	doc := struct {
		Devices []exportDevice `yaml:"devices"`
	}{Devices: make([]exportDevice, 0, len(keys))}
	for _, k := range keys {
		d := exportDevice{KeyHex: hex.EncodeToString(k.Secret), Hash: hashName(k.Hash), Endpoint: k.Endpoint, ServerName: k.ServerName}
		d.Identity, d.IdentityHex = splitID(k.Identity)
		doc.Devices = append(doc.Devices, d)
	}
	var buf bytes.Buffer
	buf.WriteString("# Device provisioning export (gateway psk export): PLAINTEXT KEYS.\n# Handle as a secret and delete it after use.\n")
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
