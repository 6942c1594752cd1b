package importer

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

func testEPSK() pskstore.Key {
	return pskstore.Key{
		Identity:   []byte("lwm2m-device-0001"),
		Secret:     pskstore.Secret(unhexKey("9f4c2be1d07a3356e8b1c4fa20d96e7b51a3c8f06d2e94b7a1c5f3e8072bd64a")),
		Endpoint:   "urn:dev:ops:32473-Node-1",
		ServerName: "lwm2m.example.com",
		Backend:    "dm",
		Versions:   pskstore.DTLS12 | pskstore.DTLS13,
		Modes:      pskstore.ModeDHE | pskstore.ModeKE,
		Legacy:     true,
	}
}

func unhexKey(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestImport(t *testing.T) {
	epsk := testEPSK()
	ctx := Context(epsk.Endpoint, epsk.ServerName)
	keys, err := Import(epsk, ctx, DTLSTargets())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("got %d keys, want 2", len(keys))
	}
	for i, want := range []struct {
		kdf  uint16
		hash crypto.Hash
	}{{HKDFSHA256, crypto.SHA256}, {HKDFSHA384, crypto.SHA384}} {
		k := keys[i]
		id, err := ParseImportedIdentity(k.Identity)
		if err != nil {
			t.Fatalf("key %d identity: %v", i, err)
		}
		wantID := ImportedIdentity{epsk.Identity, ctx, ProtocolDTLS13, want.kdf}
		if !equalIdentity(id, wantID) {
			t.Errorf("key %d identity = %+v, want %+v", i, id, wantID)
		}
		ipskx, err := Derive(epsk.Secret, crypto.SHA256, wantID)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(k.Secret, ipskx) || len(k.Secret) != want.hash.Size() {
			t.Errorf("key %d secret is not ipskx of length %d", i, want.hash.Size())
		}
		if k.Hash != want.hash {
			t.Errorf("key %d hash = %v, want %v", i, k.Hash, want.hash)
		}
		if k.Endpoint != epsk.Endpoint || k.ServerName != epsk.ServerName || k.Backend != epsk.Backend {
			t.Errorf("key %d policy fields not copied: %+v", i, k)
		}
		if k.Versions != pskstore.DTLS13 || k.Legacy {
			t.Errorf("R6: key %d versions = %v legacy = %v, want dtls1.3 only", i, k.Versions, k.Legacy)
		}
		if !bytes.Equal(k.ImportContext, ctx) || k.ImportContext == nil {
			t.Errorf("R6: key %d ImportContext = %x, want %x", i, k.ImportContext, ctx)
		}
		if k.Modes != epsk.Modes {
			t.Errorf("key %d modes = %v, want %v", i, k.Modes, epsk.Modes)
		}
		if err := pskstore.CheckKey(k, pskstore.Options{}).Err(); err != nil {
			t.Errorf("key %d fails pskstore.Check: %v", i, err)
		}
	}
	if bytes.Equal(keys[0].Secret, epsk.Secret) || bytes.Equal(keys[1].Secret[:32], epsk.Secret) {
		t.Error("R6: imported key equals the epsk")
	}
}

func TestImportLowEntropy(t *testing.T) {
	epsk := testEPSK()
	epsk.Secret = pskstore.Secret("correct horse battery staple")
	if _, err := Import(epsk, nil, DTLSTargets()); !isPolicy(err, "R2") {
		t.Fatalf("R2: low-entropy epsk without allow: %v", err)
	}
	epsk.AllowLowEntropy = true
	epsk.Modes = pskstore.ModeDHE
	epsk.Legacy = false
	keys, err := Import(epsk, nil, DTLSTargets())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if low, _ := pskstore.LowEntropy(k.Secret); low {
			t.Fatal("ipskx of a passphrase should look random; that is why the flag must be kept")
		}
		if !k.AllowLowEntropy || k.Modes != pskstore.ModeDHE {
			t.Errorf("R2: imported low-entropy key: allow=%v modes=%v, want true psk_dhe_ke", k.AllowLowEntropy, k.Modes)
		}
	}
}

func isPolicy(err error, rule pskstore.Rule) bool {
	var pe *pskstore.PolicyError
	return errors.As(err, &pe) && pe.Rule == rule
}

func TestImportGroupKey(t *testing.T) {
	epsk := testEPSK()
	epsk.Group = true
	tests := []struct {
		name string
		ctx  []byte
		want error
	}{
		{"R4-R6/peers-context", Context("urn:dev:ops:32473-Node-1", "lwm2m.example.com"), nil},
		{"R4-R6/no-context", nil, ErrGroupContext},
		{"R4-R6/opaque-context", []byte("some context"), ErrGroupContext},
		{"R4-R6/client-only", Context("urn:dev:ops:32473-Node-1", ""), ErrGroupContext},
		{"R4-R6/other-server", Context("urn:dev:ops:32473-Node-1", "other.example.com"), ErrGroupContext},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := Import(epsk, tt.ctx, DTLSTargets())
			if !errors.Is(err, tt.want) {
				t.Fatalf("Import error = %v, want %v", err, tt.want)
			}
			for _, k := range keys {
				if !k.Group {
					t.Error("R4: imported key of a group epsk lost its group mark")
				}
				if err := pskstore.Check(k); err != nil {
					t.Errorf("R4: imported group key refused by the policy: %v", err)
				}
			}
		})
	}
}

func TestImportErrors(t *testing.T) {
	short := testEPSK()
	short.Secret = short.Secret[:15]
	dtls12 := testEPSK()
	dtls12.Versions = pskstore.DTLS12
	sha512 := testEPSK()
	sha512.Hash = crypto.SHA512
	tests := []struct {
		name    string
		epsk    pskstore.Key
		targets []Target
		want    error
	}{
		{"R6/no-targets", testEPSK(), nil, ErrNoTargets},
		{"R6/duplicate-target", testEPSK(), []Target{{ProtocolDTLS13, HKDFSHA256}, {ProtocolDTLS13, HKDFSHA256}}, ErrDuplicateTarget},
		{"R6/tls13-target-on-dtls-gateway", testEPSK(), []Target{{ProtocolTLS13, HKDFSHA256}}, ErrNotDTLS},
		{"R6/dtls12-target", testEPSK(), []Target{{0xfefd, HKDFSHA256}}, ErrTargetProtocol},
		{"R6/unknown-kdf", testEPSK(), []Target{{ProtocolDTLS13, 9}}, ErrTargetKDF},
		{"R6/epsk-dtls12-only", dtls12, DTLSTargets(), ErrVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Import(tt.epsk, nil, tt.targets); !errors.Is(err, tt.want) {
				t.Fatalf("Import error = %v, want %v", err, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		epsk pskstore.Key
		rule pskstore.Rule
	}{{"R1/short-epsk", short, "R1"}, {"R3/sha512-epsk", sha512, "R3"}} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Import(tt.epsk, nil, DTLSTargets()); !isPolicy(err, tt.rule) {
				t.Fatalf("Import error = %v, want policy %s", err, tt.rule)
			}
		})
	}
	t.Run("R7/identity-over-128-left-to-store", func(t *testing.T) {
		long := testEPSK()
		keys, err := Import(long, bytes.Repeat([]byte{'c'}, 200), DTLSTargets())
		if err != nil {
			t.Fatal(err)
		}
		if !isPolicy(pskstore.Check(keys[0]), "R7") {
			t.Fatal("a 200-byte context should exceed the store's default identity limit")
		}
	})
	t.Run("R6/identity-over-65535", func(t *testing.T) {
		big := testEPSK()
		big.Identity = bytes.Repeat([]byte{'i'}, 60000)
		if _, err := Import(big, make([]byte, 6000), DTLSTargets()); !errors.Is(err, ErrIdentityTooLong) {
			t.Fatalf("Import error = %v, want %v", err, ErrIdentityTooLong)
		}
	})
}

// TestDistinctKeys: any change of context, protocol, KDF, identity or EPSK
// hash gives a different ipskx (R6: one imported key per binding).
func TestDistinctKeys(t *testing.T) {
	epsk := testEPSK()
	base := ImportedIdentity{epsk.Identity, Context("dev-1", "gw.example"), ProtocolDTLS13, HKDFSHA256}
	variants := map[string]struct {
		id   ImportedIdentity
		hash crypto.Hash
	}{
		"base":           {base, crypto.SHA256},
		"other-client":   {ImportedIdentity{base.ExternalIdentity, Context("dev-2", "gw.example"), ProtocolDTLS13, HKDFSHA256}, crypto.SHA256},
		"other-server":   {ImportedIdentity{base.ExternalIdentity, Context("dev-1", "bs.example"), ProtocolDTLS13, HKDFSHA256}, crypto.SHA256},
		"swapped-roles":  {ImportedIdentity{base.ExternalIdentity, Context("gw.example", "dev-1"), ProtocolDTLS13, HKDFSHA256}, crypto.SHA256},
		"empty-context":  {ImportedIdentity{base.ExternalIdentity, nil, ProtocolDTLS13, HKDFSHA256}, crypto.SHA256},
		"tls13":          {ImportedIdentity{base.ExternalIdentity, base.Context, ProtocolTLS13, HKDFSHA256}, crypto.SHA256},
		"other-identity": {ImportedIdentity{[]byte("lwm2m-device-0002"), base.Context, ProtocolDTLS13, HKDFSHA256}, crypto.SHA256},
		"epsk-sha384":    {base, crypto.SHA384},
		"sha384-target":  {ImportedIdentity{base.ExternalIdentity, base.Context, ProtocolDTLS13, HKDFSHA384}, crypto.SHA256},
	}
	seen := map[string]string{}
	for name, v := range variants {
		k, err := Derive(epsk.Secret, v.hash, v.id)
		if err != nil {
			t.Fatal(err)
		}
		prefix := string(k[:32])
		if other, ok := seen[prefix]; ok {
			t.Errorf("R6: %s and %s derive the same key", name, other)
		}
		seen[prefix] = name
	}

	a, err := Import(epsk, Context("dev-1", "gw.example"), DTLSTargets())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Import(epsk, Context("dev-2", "gw.example"), DTLSTargets())
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if bytes.Equal(a[i].Identity, b[i].Identity) || bytes.Equal(a[i].Secret, b[i].Secret) {
			t.Errorf("R6: target %d: contexts naming different clients give the same key", i)
		}
	}
	if bytes.Equal(a[0].Secret, a[1].Secret[:32]) {
		t.Error("R6: sha256 and sha384 targets share key material")
	}
}

func TestDeriveErrors(t *testing.T) {
	id := ImportedIdentity{[]byte("a"), nil, ProtocolDTLS13, HKDFSHA256}
	if _, err := Derive(nil, crypto.SHA256, id); !errors.Is(err, ErrEmptyKey) {
		t.Errorf("empty epsk: %v, want %v", err, ErrEmptyKey)
	}
	if _, err := Derive([]byte("k"), crypto.SHA512, id); !errors.Is(err, ErrHash) {
		t.Errorf("sha512 epsk: %v, want %v", err, ErrHash)
	}
	if _, err := Derive([]byte("k"), crypto.SHA256, ImportedIdentity{}); !errors.Is(err, ErrExternalIdentity) {
		t.Errorf("empty identity: %v, want %v", err, ErrExternalIdentity)
	}
	zero, err := Derive([]byte("k"), 0, id)
	if err != nil {
		t.Fatal(err)
	}
	sha, _ := Derive([]byte("k"), crypto.SHA256, id)
	if !bytes.Equal(zero, sha) {
		t.Error("a zero epsk hash must mean SHA-256 (RFC 9258 §5.1)")
	}
}

func TestContext(t *testing.T) {
	c := Context("dev-1", "gw.example")
	client, server, err := ParseContext(c)
	if err != nil || client != "dev-1" || server != "gw.example" {
		t.Fatalf("ParseContext = %q, %q, %v", client, server, err)
	}
	if Context("", "gw") != nil || Context("dev", "") != nil {
		t.Error("R4: Context must refuse an empty peer name")
	}
	if Context(string(make([]byte, 40000)), string(make([]byte, 40000))) != nil {
		t.Error("Context must refuse names that do not fit 65535 bytes")
	}
	for _, bad := range [][]byte{nil, {0, 0, 0, 1, 'x'}, {0, 1, 'x', 0, 0}, append(bytes.Clone(c), 0), c[:len(c)-1]} {
		if _, _, err := ParseContext(bad); !errors.Is(err, ErrContext) {
			t.Errorf("ParseContext(%x) = %v, want %v", bad, err, ErrContext)
		}
	}
}
