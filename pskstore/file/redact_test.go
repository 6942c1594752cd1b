package file

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var keyValue = regexp.MustCompile(`(?m)(key_hex|key_base64|identity):\s*"([^"]*)"`)

// secretsIn returns every key of a key file in the forms an error could show
// it (the text written, raw bytes, hex both cases, base64), and the text
// identities.
func secretsIn(t *testing.T, data []byte) (keys []string, identities []string) {
	t.Helper()
	for _, m := range keyValue.FindAllStringSubmatch(string(data), -1) {
		v := m[2]
		if m[1] == "identity" {
			if len(v) >= 6 {
				identities = append(identities, v)
			}
			continue
		}
		keys = append(keys, v)
		var raw []byte
		if m[1] == "key_hex" {
			raw, _ = hex.DecodeString(v)
		} else {
			raw, _ = base64.StdEncoding.DecodeString(v)
		}
		if len(raw) >= 4 {
			keys = append(keys, string(raw), hex.EncodeToString(raw), strings.ToUpper(hex.EncodeToString(raw)),
				base64.StdEncoding.EncodeToString(raw), fmt.Sprint(raw))
		}
	}
	return keys, identities
}

// TestErrorsNeverShowKeysR9 loads every bad key file, plus files where a key
// sits where it does not belong, and checks that no error shows a key or a
// text identity (R9); identities appear only as keyed tags.
func TestErrorsNeverShowKeysR9(t *testing.T) {
	const k = "8a1355e09107c42b6df839ae0277b54c1e60d39f24b84ac705e97b31fd86520c"
	misplaced := map[string]string{
		"key as field name":         "keys:\n  - identity: \"device-0001\"\n    \"" + k + "\": x\n    key_hex: \"" + k + "\"\n",
		"key as top-level field":    "\"" + k + "\": 1\nkeys: []\n",
		"key as hash":               "keys:\n  - identity: \"device-0001\"\n    key_hex: \"" + k + "\"\n    hash: \"" + k + "\"\n",
		"key as version":            "keys:\n  - identity: \"device-0001\"\n    key_hex: \"" + k + "\"\n    versions: [\"" + k + "\"]\n",
		"key as bool":               "keys:\n  - identity: \"device-0001\"\n    key_hex: \"" + k + "\"\n    legacy: \"" + k + "\"\n",
		"key with a bad digit":      "keys:\n  - identity: \"device-0001\"\n    key_hex: \"" + k[:63] + "x\"\n",
		"key in broken yaml":        "keys:\n  - identity: \"device-0001\"\n    key_hex: \"" + k + "\n  - x: [\n",
		"key in yaml with a tab":    "keys:\n\t- key_hex: \"" + k + "\"\n",
		"key as base64 bad padding": "keys:\n  - identity: \"device-0001\"\n    key_base64: \"" + base64.RawStdEncoding.EncodeToString([]byte(k[:32])) + "\"\n",
	}
	type file struct{ name, path string }
	var files []file
	for _, tt := range badFiles {
		files = append(files, file{tt.name, badPath(t, tt.file, tt.gen)})
	}
	dir := t.TempDir()
	for name, data := range misplaced {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, file{name, path})
	}
	for _, f := range files {
		t.Run(f.name, func(t *testing.T) {
			data, err := os.ReadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Open(f.path)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			msg := err.Error() + fmt.Sprintf("%v %+v %#v", err, err, err)
			keys, identities := secretsIn(t, data)
			if strings.Contains(f.name, "key") {
				keys = append(keys, k, k[:32], k[32:])
			}
			for _, s := range keys {
				if strings.Contains(msg, s) {
					t.Errorf("error shows a key: %s", msg)
				}
			}
			for _, id := range identities {
				if strings.Contains(msg, id) {
					t.Errorf("error shows identity %q: %s", id, msg)
				}
			}
		})
	}
}
