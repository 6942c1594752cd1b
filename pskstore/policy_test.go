package pskstore

import (
	"crypto"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// strongKey is a fixed key that passes the entropy screen.
var strongKey = Secret("\x8a\x13\x55\xe0\x91\x07\xc4\x2b\x6d\xf8\x39\xae\x02\x77\xb5\x4c\x1e\x60\xd3\x9f\x24\xb8\x4a\xc7\x05\xe9\x7b\x31\xfd\x86\x52\x0c")

func validKey() Key {
	return Key{Identity: []byte("device-0001"), Secret: append(Secret(nil), strongKey...), Endpoint: "urn:dev:0001"}
}

type finding struct {
	rule  Rule
	sev   Severity
	field string
}

func TestCheckKey(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(k *Key)
		opts   Options
		want   []finding // exactly these findings, in order
	}{
		{name: "valid", mutate: func(k *Key) {}},
		{name: "valid sha384 dtls1.3 only", mutate: func(k *Key) { k.Hash = crypto.SHA384; k.Versions = DTLS13 }},
		{name: "valid psk_ke explicitly allowed R3", mutate: func(k *Key) { k.Modes = ModeDHE | ModeKE }},
		{name: "valid legacy R3", mutate: func(k *Key) { k.Legacy = true }},
		{name: "R1 short key 15 bytes", mutate: func(k *Key) { k.Secret = k.Secret[:15] }, want: []finding{{"R1", SeverityMust, "Secret"}}},
		{name: "R1 empty key", mutate: func(k *Key) { k.Secret = nil }, want: []finding{{"R1", SeverityMust, "Secret"}}},
		{name: "R1 exactly 16 bytes ok", mutate: func(k *Key) { k.Secret = k.Secret[:16] }},
		{name: "R2 password key", mutate: func(k *Key) { k.Secret = Secret("passwordpassword") }, want: []finding{{"R2", SeverityMust, "Secret"}}},
		{name: "R2 zero key", mutate: func(k *Key) { k.Secret = make(Secret, 16) }, want: []finding{{"R2", SeverityMust, "Secret"}}},
		{name: "R2 low entropy allowed", mutate: func(k *Key) { k.Secret = Secret("passwordpassword"); k.AllowLowEntropy = true }},
		{name: "R2 low entropy allowed refuses psk_ke", mutate: func(k *Key) {
			k.Secret = Secret("passwordpassword")
			k.AllowLowEntropy = true
			k.Modes = ModeDHE | ModeKE
		}, want: []finding{{"R2", SeverityMust, "Modes"}}},
		{name: "R2 low entropy allowed refuses legacy", mutate: func(k *Key) {
			k.Secret = Secret("passwordpassword")
			k.AllowLowEntropy = true
			k.Legacy = true
		}, want: []finding{{"R2", SeverityMust, "Legacy"}}},
		{name: "R2 allow flag refuses psk_ke even for a strong key", mutate: func(k *Key) { k.AllowLowEntropy = true; k.Modes = ModeKE }, want: []finding{{"R2", SeverityMust, "Modes"}}},
		{name: "R3 md5 hash", mutate: func(k *Key) { k.Hash = crypto.MD5 }, want: []finding{{"R3", SeverityMust, "Hash"}}},
		{name: "R3 unknown version", mutate: func(k *Key) { k.Versions = 1 << 5 }, want: []finding{{"R3", SeverityMust, "Versions"}}},
		{name: "R3 unknown mode", mutate: func(k *Key) { k.Modes = 1 << 5 }, want: []finding{{"R3", SeverityMust, "Modes"}}},
		{name: "R3 legacy without dtls1.2 warns", mutate: func(k *Key) { k.Legacy = true; k.Versions = DTLS13 }, want: []finding{{"R3", SeverityShould, "Legacy"}}},
		{name: "R4 group without import context", mutate: func(k *Key) { k.Group = true }, want: []finding{{"R4", SeverityMust, "Group"}}},
		{name: "R4 group with import context", mutate: func(k *Key) { k.Group = true; k.ImportContext = []byte("client=a;server=b") }},
		{name: "R7 empty identity", mutate: func(k *Key) { k.Identity = nil }, want: []finding{{"R7", SeverityMust, "Identity"}}},
		{name: "R7 identity at default limit 128", mutate: func(k *Key) { k.Identity = []byte(strings.Repeat("a", 128)) }},
		{name: "R7 identity over default limit 129", mutate: func(k *Key) { k.Identity = []byte(strings.Repeat("a", 129)) }, want: []finding{{"R7", SeverityMust, "Identity"}}},
		{name: "R7 identity under configured limit", mutate: func(k *Key) { k.Identity = []byte(strings.Repeat("a", 1000)) }, opts: Options{MaxIdentityLen: 1000}},
		{name: "R7 identity over wire limit", mutate: func(k *Key) { k.Identity = []byte(strings.Repeat("a", 70000)) }, opts: Options{MaxIdentityLen: 1 << 20}, want: []finding{{"R7", SeverityMust, "Identity"}}},
		{name: "R7 binary identity warns", mutate: func(k *Key) { k.Identity = []byte{0x00, 0xa1, 0xff} }, want: []finding{{"R7", SeverityShould, "Identity"}}},
		{name: "R7 identity not nfc warns", mutate: func(k *Key) { k.Identity = []byte("cafe\u0301") }, want: []finding{{"R7", SeverityShould, "Identity"}}},
		{name: "R7 nfc identity ok", mutate: func(k *Key) { k.Identity = []byte("caf\u00e9") }},
		{name: "R8 resumption prefix", mutate: func(k *Key) { k.Identity = []byte(ResumptionPrefix + "ticket") }, want: []finding{{"R8", SeverityMust, "Identity"}, {"R7", SeverityShould, "Identity"}}},
		{name: "R8 prefix alone", mutate: func(k *Key) { k.Identity = []byte(ResumptionPrefix) }, want: []finding{{"R8", SeverityMust, "Identity"}, {"R7", SeverityShould, "Identity"}}},
		{name: "R8 partial prefix ok", mutate: func(k *Key) { k.Identity = []byte(ResumptionPrefix[:3]) }, want: []finding{{"R7", SeverityShould, "Identity"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := validKey()
			tt.mutate(&k)
			got := CheckKey(k, tt.opts)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d findings %v, want %v", len(got), got, tt.want)
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Rule != w.rule || g.Severity != w.sev || g.Field != w.field {
					t.Errorf("finding %d = %s/%s/%s (%v), want %s/%s/%s", i, g.Rule, g.Severity, g.Field, g, w.rule, w.sev, w.field)
				}
				if g.Tag != tt.opts.Tagger.Tag(k.Identity) {
					t.Errorf("finding %d tag %q, want the identity's tag", i, g.Tag)
				}
			}
			wantErr := false
			for _, w := range tt.want {
				wantErr = wantErr || w.sev == SeverityMust
			}
			if err := got.Err(); (err != nil) != wantErr {
				t.Errorf("Err() = %v, want error: %v", err, wantErr)
			}
			if err := Check(k); tt.opts == (Options{}) && (err != nil) != wantErr {
				t.Errorf("Check() = %v, want error: %v", err, wantErr)
			}
		})
	}
}

// TestCheckKeyDoesNotMutate guards the caller's Key: CheckKey normalizes a copy.
func TestCheckKeyDoesNotMutate(t *testing.T) {
	k := validKey()
	CheckKey(k, Options{})
	if k.Hash != 0 || k.Versions != 0 || k.Modes != 0 {
		t.Error("CheckKey changed the caller's key")
	}
}

func TestCheckKeys(t *testing.T) {
	other := validKey()
	other.Identity = []byte("device-0002")
	other.Secret = Secret("\x3c\x91\x0e\xd4\x77\x2a\xb9\x65\xf0\x18\xc3\x5e\x84\x4b\xa6\x1d")
	third := other.Clone()
	third.Identity = []byte("device-0003")
	third.Secret = Secret("\x52\xe7\x09\xb1\x6c\x3f\xd8\x84\x1a\xc5\x70\x2e\x99\x4d\xf6\xa3")
	with := func(k Key, f func(*Key)) Key { k = k.Clone(); f(&k); return k }

	tests := []struct {
		name string
		keys []Key
		want []finding
		idx  []int
	}{
		{name: "distinct keys", keys: []Key{validKey(), other, third}},
		{name: "R7 duplicate identity", keys: []Key{validKey(), other, with(third, func(k *Key) { k.Identity = []byte("device-0002") })},
			want: []finding{{"R7", SeverityMust, "Identity"}}, idx: []int{2}},
		{name: "R4 same key material under two identities", keys: []Key{validKey(), other, with(third, func(k *Key) { k.Secret = validKey().Secret })},
			want: []finding{{"R4", SeverityMust, "Secret"}}, idx: []int{2}},
		{name: "R7 identities equal after case folding", keys: []Key{with(validKey(), func(k *Key) { k.Identity = []byte("Device") }), with(other, func(k *Key) { k.Identity = []byte("device") })},
			want: []finding{{"R7", SeverityShould, "Identity"}}, idx: []int{1}},
		{name: "R7 identities equal after nfkc", keys: []Key{with(validKey(), func(k *Key) { k.Identity = []byte("ﬁle") }), with(other, func(k *Key) { k.Identity = []byte("FILE") })},
			want: []finding{{"R7", SeverityShould, "Identity"}}, idx: []int{1}},
		{name: "R7 device and device NUL are different", keys: []Key{with(validKey(), func(k *Key) { k.Identity = []byte("device") }), with(other, func(k *Key) { k.Identity = []byte("device\x00") })}},
		{name: "single key finding carries its index", keys: []Key{validKey(), with(other, func(k *Key) { k.Secret = k.Secret[:8] })},
			want: []finding{{"R1", SeverityMust, "Secret"}}, idx: []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CheckKeys(tt.keys, Options{})
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i, w := range tt.want {
				if g := got[i]; g.Rule != w.rule || g.Severity != w.sev || g.Field != w.field || g.Index != tt.idx[i] {
					t.Errorf("finding %d = %s/%s/%s index %d, want %s/%s/%s index %d", i, g.Rule, g.Severity, g.Field, g.Index, w.rule, w.sev, w.field, tt.idx[i])
				}
			}
		})
	}
}

func TestFindingsErr(t *testing.T) {
	var none Findings
	if none.Err() != nil {
		t.Error("no findings, non-nil error")
	}
	warn := Findings{{Rule: "R7", Severity: SeverityShould, Msg: "x"}}
	if warn.Err() != nil {
		t.Error("warnings only, non-nil error")
	}
	two := append(warn, &PolicyError{Rule: "R1", Msg: "a"}, &PolicyError{Rule: "R2", Msg: "b"})
	err := two.Err()
	var pe *PolicyError
	if !errors.As(err, &pe) || pe.Rule != "R1" {
		t.Errorf("errors.As on joined findings = %v, want the R1 finding", pe)
	}
	if strings.Contains(err.Error(), "R7") {
		t.Error("Err includes a warning")
	}
	if got := len(two.Must()); got != 2 {
		t.Errorf("Must() has %d findings, want 2", got)
	}
	if got := len(two.Warnings()); got != 1 {
		t.Errorf("Warnings() has %d findings, want 1", got)
	}
}

func TestPolicyErrorMessage(t *testing.T) {
	tests := []struct {
		err  *PolicyError
		want string
	}{
		{&PolicyError{Rule: "R1", Msg: "key too short"}, "policy R1: key too short"},
		{&PolicyError{Rule: "R1", Tag: "id:00", Msg: "key too short"}, "policy R1: identity id:00: key too short"},
		{&PolicyError{Rule: "R7", Severity: SeverityShould, Tag: "id:00", Msg: "not nfc"}, "policy R7 (should): identity id:00: not nfc"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

// TestCheckAdd: a write is checked against the keys the store holds, and
// findings name the added key and the other one.
func TestCheckAdd(t *testing.T) {
	tagger := NewTagger([]byte("check add test tag secret"))
	opts := Options{Tagger: tagger}
	stored := []Key{validKey()}
	fresh := func(id string) Key {
		s, err := GenerateSecret(0)
		if err != nil {
			t.Fatal(err)
		}
		return Key{Identity: []byte(id), Secret: s}
	}

	t.Run("R7 identity already stored", func(t *testing.T) {
		k := fresh(string(stored[0].Identity))
		f := CheckAdd(stored, []Key{fresh("new-1"), k}, opts)
		if len(f) != 1 || f[0].Rule != "R7" || f[0].Index != 1 || f[0].With == nil || f[0].With.Index != InStore {
			t.Fatalf("findings %v", f)
		}
		if !errors.Is(f.Err(), ErrDuplicateIdentity) {
			t.Errorf("error %v does not wrap ErrDuplicateIdentity", f.Err())
		}
	})
	t.Run("R7 identity twice among the added", func(t *testing.T) {
		f := CheckAdd(stored, []Key{fresh("a"), fresh("b"), fresh("a")}, opts)
		if len(f) != 1 || f[0].Index != 2 || f[0].With.Index != 0 || f[0].With.Tag != tagger.Tag([]byte("a")) {
			t.Fatalf("findings %v", f)
		}
		if errors.Is(f.Err(), ErrDuplicateIdentity) {
			t.Error("a duplicate within the batch reported as one of the store")
		}
	})
	t.Run("R4 key material of a stored key", func(t *testing.T) {
		k := fresh("copy")
		k.Secret = stored[0].Secret
		f := CheckAdd(stored, []Key{k}, opts)
		if len(f) != 1 || f[0].Rule != "R4" || f[0].With.Index != InStore || f[0].With.Tag != tagger.Tag(stored[0].Identity) {
			t.Fatalf("findings %v", f)
		}
		if strings.Contains(f[0].Error(), string(stored[0].Identity)) {
			t.Errorf("finding %q shows a raw identity (R9)", f[0])
		}
	})
	t.Run("R4 key material twice among the added", func(t *testing.T) {
		a, b := fresh("a"), fresh("b")
		b.Secret = a.Secret
		f := CheckAdd(nil, []Key{a, b}, opts)
		if len(f) != 1 || f[0].Rule != "R4" || f[0].Index != 1 || f[0].With.Index != 0 {
			t.Fatalf("findings %v", f)
		}
	})
	t.Run("R7 look-alike of a stored identity warns", func(t *testing.T) {
		f := CheckAdd(stored, []Key{fresh(strings.ToUpper(string(stored[0].Identity)))}, opts)
		if len(f) != 1 || f[0].Severity != SeverityShould || f[0].With.Index != InStore || f.Err() != nil {
			t.Fatalf("findings %v", f)
		}
	})
	t.Run("stored keys' own findings are not reported", func(t *testing.T) {
		bad := validKey()
		bad.Identity, bad.Secret = []byte("short"), bad.Secret[:8]
		if f := CheckAdd([]Key{bad}, []Key{fresh("new")}, opts); len(f) != 0 {
			t.Fatalf("findings %v", f)
		}
	})
	t.Run("R7 imported identities are binary by design", func(t *testing.T) {
		k := fresh("\x00\x0bdevice-0001\x00\x02ab\xfe\xfc\x00\x01")
		k.ImportContext = []byte("ab")
		if f := CheckAdd(nil, []Key{k}, opts); len(f) != 0 {
			t.Fatalf("findings %v", f)
		}
		k.ImportContext = nil
		if f := CheckAdd(nil, []Key{k}, opts); len(f) != 1 || f[0].Rule != "R7" {
			t.Fatalf("a binary identity not imported: findings %v", f)
		}
	})
	t.Run("a large batch keeps key order", func(t *testing.T) {
		keys := make([]Key, 4100)
		for i := range keys {
			keys[i] = fresh(fmt.Sprintf("bulk-%05d", i))
		}
		keys[3999].Secret = keys[3999].Secret[:15]
		keys[17].Secret = keys[17].Secret[:15]
		f := CheckAdd(nil, keys, opts)
		if len(f) != 2 || f[0].Index != 17 || f[1].Index != 3999 || f[0].Rule != "R1" {
			t.Fatalf("findings %v", f)
		}
	})
}
