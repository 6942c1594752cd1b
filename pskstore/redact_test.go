package pskstore

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// leaks reports how s shows secret, if it does: raw, hex (either case) or
// base64 (R9: PSKs never appear outside the store).
func leaks(s string, secret []byte) string {
	forms := map[string]string{
		"raw":    string(secret),
		"hex":    hex.EncodeToString(secret),
		"HEX":    strings.ToUpper(hex.EncodeToString(secret)),
		"base64": base64.StdEncoding.EncodeToString(secret),
		"spaced": fmt.Sprintf("% x", []byte(secret)),
		"bytes":  fmt.Sprint([]byte(secret)),
	}
	for name, f := range forms {
		if strings.Contains(s, f) {
			return name
		}
	}
	return ""
}

// TestKeyFormattingR9 formats a Key, a *Key and a Secret with every common
// verb: the key bytes never appear.
func TestKeyFormattingR9(t *testing.T) {
	k := validKey()
	k.Normalize()
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "% x", "%d", "%o", "%b", "%T", "%100v"}
	for _, v := range verbs {
		for name, arg := range map[string]any{"Key": k, "*Key": &k, "Secret": k.Secret, "[]Key": []Key{k}, "map": map[string]Key{"a": k}} {
			if how := leaks(fmt.Sprintf(v, arg), k.Secret); how != "" {
				t.Errorf("fmt %s of %s shows the key (%s)", v, name, how)
			}
		}
	}
	if got := k.Secret.String(); got != "[redacted 32-byte key]" {
		t.Errorf("Secret.String() = %q", got)
	}
}

// TestPolicyErrorsR9 provokes every finding and checks that no message
// carries the key or the raw identity (R9).
func TestPolicyErrorsR9(t *testing.T) {
	identity := []byte("secret-device-name-0042")
	keys := []Key{
		{Identity: identity, Secret: Secret("passwordpassword")},
		{Identity: identity, Secret: Secret("passwordpassword")[:10], Group: true, Modes: ModeKE, AllowLowEntropy: true, Legacy: true, Hash: 99},
		{Identity: []byte("SECRET-DEVICE-NAME-0042"), Secret: strongKey},
		{Identity: []byte("other"), Secret: strongKey},
	}
	findings := CheckKeys(keys, Options{})
	if len(findings) < 6 {
		t.Fatalf("only %d findings; the test needs most rules to fire", len(findings))
	}
	msg := findings.Err().Error()
	for _, f := range findings {
		msg += "\n" + f.Error() + fmt.Sprintf("%v %+v %#v", f, f, *f)
	}
	for _, k := range keys {
		if how := leaks(msg, k.Secret); how != "" {
			t.Errorf("policy messages show a key (%s)", how)
		}
	}
	if bytes.Contains([]byte(strings.ToLower(msg)), bytes.ToLower(identity)) {
		t.Error("policy messages show a raw identity")
	}
}

func TestKeyCloneAndEqual(t *testing.T) {
	k := validKey()
	k.ImportContext = []byte("ctx")
	c := k.Clone()
	if !c.Equal(k) {
		t.Fatal("clone differs")
	}
	c.Identity[0] ^= 1
	c.Secret[0] ^= 1
	c.ImportContext[0] ^= 1
	if !bytes.Equal(k.Identity, []byte("device-0001")) || k.Secret[0] != strongKey[0] || k.ImportContext[0] != 'c' {
		t.Error("clone shares memory with the original")
	}
	tests := []struct {
		name   string
		mutate func(*Key)
	}{
		{"identity", func(k *Key) { k.Identity = []byte("x") }},
		{"secret", func(k *Key) { k.Secret = k.Secret[:16] }},
		{"endpoint", func(k *Key) { k.Endpoint = "x" }},
		{"server name", func(k *Key) { k.ServerName = "x" }},
		{"backend", func(k *Key) { k.Backend = "x" }},
		{"versions", func(k *Key) { k.Versions = DTLS13 }},
		{"modes", func(k *Key) { k.Modes = ModeKE }},
		{"legacy", func(k *Key) { k.Legacy = true }},
		{"allow low entropy", func(k *Key) { k.AllowLowEntropy = true }},
		{"group", func(k *Key) { k.Group = true }},
		{"import context", func(k *Key) { k.ImportContext = []byte("other") }},
		{"hash", func(k *Key) { k.Hash = 5 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := k.Clone()
			tt.mutate(&o)
			if o.Equal(k) || k.Equal(o) {
				t.Error("keys differing in one field compare equal")
			}
		})
	}
	var empty, nilCtx Key
	empty.ImportContext = []byte{}
	if !empty.Equal(nilCtx) {
		t.Error("nil and empty ImportContext differ")
	}
}
