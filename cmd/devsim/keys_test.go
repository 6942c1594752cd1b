package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/export"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

const hexKey = "8f1c2a9b7e3d4c5f60718293a4b5c6d7e8f9012345678901abcdef0123456789"

func TestParseCSVKeys(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string // identity/endpoint pairs
		wantErr string   // substring; "" for success
	}{
		{name: "header and comment", in: "# keys\nidentity,key_hex,endpoint\ndev-1," + hexKey + ",urn:dev:1\n",
			want: []string{"dev-1", "urn:dev:1"}},
		{name: "endpoint defaults to identity", in: "dev-2," + hexKey + "\n", want: []string{"dev-2", "dev-2"}},
		{name: "spaces trimmed", in: "dev-3, " + hexKey + " , urn:dev:3\n", want: []string{"dev-3", "urn:dev:3"}},
		{name: "two devices", in: "a," + hexKey + ",ea\nb," + hexKey + ",eb\n", want: []string{"a", "ea", "b", "eb"}},
		{name: "bad hex", in: "dev," + hexKey[:5] + "zz\n", wantErr: "line 1: key_hex"},
		{name: "empty key", in: "dev,,urn\n", wantErr: "key_hex"},
		{name: "one field", in: "dev\n", wantErr: "line 1: want identity,key_hex"},
		{name: "four fields", in: "dev," + hexKey + ",ep,x\n", wantErr: "got 4 fields"},
		{name: "empty identity", in: " ," + hexKey + "\n", wantErr: "empty identity"},
		{name: "duplicate", in: "a," + hexKey + "\na," + hexKey + "\n", wantErr: "line 2: identity repeats line 1"},
		{name: "no keys", in: "# nothing\n", wantErr: "no keys"},
		{name: "bad quoting", in: "\"a," + hexKey + "\n", wantErr: "line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := parseCSVKeys(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if !errors.Is(err, errCSV) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), hexKey[:16]) {
					t.Fatalf("error echoes the key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, k := range keys {
				got = append(got, string(k.Identity), k.Endpoint)
				if len(k.Secret) != 32 {
					t.Errorf("key of %s is %d bytes", k.Identity, len(k.Secret))
				}
				for _, p := range profiles {
					if !p.allows(k) {
						t.Errorf("CSV key does not allow %s", p.name)
					}
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// --gen-keys writes a file the gateway's own parser accepts, with bindings
// that match the mix, and loadKeys reads it (and the CSV variant) back.
func TestGenKeysRoundTrip(t *testing.T) {
	m, err := parseMix("1.3-dhe=60,1.3-ke=20,1.2-ccm8=20")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := genKeys(50, m, "gw.example")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"keys.yaml", "keys.csv"} {
		path := filepath.Join(dir, name)
		if err := writeKeys(path, keys); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600 (R9)", name, st.Mode().Perm())
		}
		got, err := loadKeys(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 50 {
			t.Fatalf("%s: %d keys", name, len(got))
		}
		profs := m.assign(50)
		picked, shared, err := pickKeys(got, profs)
		if err != nil || shared != 0 {
			t.Fatalf("%s: pickKeys: shared %d, %v", name, shared, err)
		}
		for i, p := range profs {
			if picked[i] != i {
				t.Errorf("%s: device %d got key %d", name, i, picked[i])
			}
			k := got[i]
			if string(k.Identity) != string(keys[i].Identity) || k.Endpoint != keys[i].Endpoint || !bytes.Equal(k.Secret, keys[i].Secret) {
				t.Errorf("%s: key %d differs after the round trip", name, i)
			}
			if name == "keys.yaml" {
				if k.ServerName != "gw.example" {
					t.Errorf("key %d server name %q", i, k.ServerName)
				}
				wantKE, wantLegacy := p.name == "1.3-ke", p.name == "1.2-ccm8"
				if k.Modes.Has(pskstore.ModeKE) != wantKE || k.Legacy != wantLegacy {
					t.Errorf("key %d (%s): modes %v legacy %v", i, p.name, k.Modes, k.Legacy)
				}
			}
		}
	}
	if keys[0].Endpoint != "urn:dev:load000001" || string(keys[49].Identity) != "load000050" {
		t.Errorf("names: %s %s", keys[0].Endpoint, keys[49].Identity)
	}
}

func TestLoadKeysRefusesWhatTheGatewayRefuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "short.yaml")
	// R1: a 15-byte key.
	data := "keys:\n  - identity: \"d\"\n    key_hex: \"000102030405060708090a0b0c0d0e\"\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadKeys(path); err == nil {
		t.Fatal("a 15-byte key was accepted")
	}
}

func TestPickKeys(t *testing.T) {
	key := func(id string, modes pskstore.Modes, legacy bool) pskstore.Key {
		return pskstore.Key{Identity: []byte(id), Secret: make([]byte, 32), Modes: modes, Legacy: legacy}
	}
	keys := []pskstore.Key{
		key("dhe", pskstore.ModeDHE, false),
		key("ke", pskstore.ModeDHE|pskstore.ModeKE, false),
		key("legacy", pskstore.ModeDHE, true),
	}
	dhe, ke, ccm8 := findProfile("1.3-dhe"), findProfile("1.3-ke"), findProfile("1.2-ccm8")

	// Device order differs from key order: each still gets a fitting key.
	picked, shared, err := pickKeys(keys, []*profile{ccm8, ke, dhe})
	if err != nil || shared != 0 {
		t.Fatalf("shared %d, %v", shared, err)
	}
	if want := []int{2, 1, 0}; picked[0] != want[0] || picked[1] != want[1] || picked[2] != want[2] {
		t.Errorf("picked %v, want %v", picked, want)
	}
	// More psk_ke devices than psk_ke keys: the key is shared.
	_, shared, err = pickKeys(keys, []*profile{ke, ke, ke})
	if err != nil || shared != 2 {
		t.Errorf("shared %d, %v; want 2", shared, err)
	}
	// No key allows plain PSK.
	if _, _, err := pickKeys(keys[:2], []*profile{ccm8}); err == nil {
		t.Error("no error without a legacy key")
	}
}

// TestLoadKeysReadsExports: devsim reads what gateway psk export writes,
// CSV and YAML, every binding included, so a fleet can run on keys
// exported from the gateway's store.
func TestLoadKeysReadsExports(t *testing.T) {
	m, err := parseMix("1.3-dhe=50,1.3-ke=25,1.2-ccm8=25")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := genKeys(8, m, "gw.example")
	if err != nil {
		t.Fatal(err)
	}
	keys[0].Backend, keys[1].Versions = "dm", pskstore.DTLS13
	dir := t.TempDir()
	for name, write := range map[string]func(io.Writer, []pskstore.Key) error{"export.csv": export.WriteCSV, "export.yaml": export.WriteYAML} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := write(&buf, keys); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := loadKeys(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(keys) {
				t.Fatalf("%d keys, want %d", len(got), len(keys))
			}
			for i := range keys {
				if !got[i].Equal(keys[i]) {
					t.Errorf("key %d: %+v, want %+v", i, got[i], keys[i])
				}
			}
		})
	}
}

// TestLoadKeysSealed: a key file sealed at rest is read with the gateway's
// KEK from DEVSIM_KEK_FILE or DEVSIM_KEK, and refused, saying so, without.
func TestLoadKeysSealed(t *testing.T) {
	m, err := parseMix("1.3-dhe=100")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := genKeys(3, m, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	material := make([]byte, sealed.KEKSize)
	for {
		rand.Read(material)
		if _, err := sealed.NewKEK(material); err == nil {
			break
		}
	}
	kek, _ := sealed.NewKEK(material)
	kekFile := filepath.Join(dir, "kek")
	if err := os.WriteFile(kekFile, []byte(hex.EncodeToString(material)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "keys.yaml")
	if err := file.Save(path, keys, file.WithKEK(kek)); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DEVSIM_KEK_FILE", "")
	t.Setenv("DEVSIM_KEK", "")
	if _, err := loadKeys(path); !errors.Is(err, file.ErrNoKEK) || !strings.Contains(err.Error(), "DEVSIM_KEK_FILE") {
		t.Fatalf("sealed file without a KEK: %v", err)
	}
	for name, env := range map[string][2]string{"file": {"DEVSIM_KEK_FILE", kekFile}, "env": {"DEVSIM_KEK", hex.EncodeToString(material)}} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(env[0], env[1])
			got, err := loadKeys(path)
			if err != nil || len(got) != 3 || !bytes.Equal(got[2].Secret, keys[2].Secret) {
				t.Fatalf("sealed file with the KEK: %d keys, %v", len(got), err)
			}
		})
	}
}
