package main

import (
	"errors"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

func TestParseMix(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		want    string // String() of the result
		wantErr bool
	}{
		{name: "brief example", spec: "1.3-dhe=60,1.3-ke=20,1.2-ccm8=20", want: "1.3-dhe=60,1.3-ke=20,1.2-ccm8=20"},
		{name: "missing weight is 1", spec: "1.3-dhe,1.2-ecdhe", want: "1.3-dhe=1,1.2-ecdhe=1"},
		{name: "spaces", spec: " 1.3-dhe = 3 , 1.2-gcm=1 ", want: "1.3-dhe=3,1.2-gcm=1"},
		{name: "zero weight dropped", spec: "1.3-dhe=1,1.3-ke=0", want: "1.3-dhe=1"},
		{name: "all profiles", spec: "1.3-dhe,1.3-ke,1.3-chacha,1.2-ccm8,1.2-ccm,1.2-gcm,1.2-ecdhe",
			want: "1.3-dhe=1,1.3-ke=1,1.3-chacha=1,1.2-ccm8=1,1.2-ccm=1,1.2-gcm=1,1.2-ecdhe=1"},
		{name: "empty", spec: "", wantErr: true},
		{name: "unknown profile", spec: "1.3-dhe=1,tls-1.0=1", wantErr: true},
		{name: "negative weight", spec: "1.3-dhe=-1", wantErr: true},
		{name: "fractional weight", spec: "1.3-dhe=0.5", wantErr: true},
		{name: "huge weight", spec: "1.3-dhe=2000000", wantErr: true},
		{name: "twice", spec: "1.3-dhe=1,1.3-dhe=2", wantErr: true},
		{name: "all zero", spec: "1.3-dhe=0,1.3-ke=0", wantErr: true},
		{name: "trailing comma", spec: "1.3-dhe=1,", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseMix(tt.spec)
			if tt.wantErr {
				if !errors.Is(err, errSpec) {
					t.Fatalf("parseMix(%q) = %v, want an errSpec error", tt.spec, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := m.String(); got != tt.want {
				t.Errorf("parseMix(%q) = %s, want %s", tt.spec, got, tt.want)
			}
		})
	}
}

// The assignment follows the weights exactly over a whole cycle and within
// one device over any prefix, and is deterministic (--gen-keys relies on it).
func TestMixAssign(t *testing.T) {
	m, err := parseMix("1.3-dhe=60,1.3-ke=20,1.2-ccm8=20")
	if err != nil {
		t.Fatal(err)
	}
	profs := m.assign(1000)
	count := map[string]int{}
	for i, p := range profs {
		count[p.name]++
		n := float64(i + 1)
		for j, e := range m.entries {
			want := n * float64(m.weights[j]) / 100
			if d := float64(count[e.name]) - want; d > 1 || d < -1 {
				t.Fatalf("after %d devices: %d of %s, want %.1f±1", i+1, count[e.name], e.name, want)
			}
		}
	}
	if count["1.3-dhe"] != 600 || count["1.3-ke"] != 200 || count["1.2-ccm8"] != 200 {
		t.Errorf("counts %v, want 600/200/200", count)
	}
	again := m.assign(1000)
	for i := range profs {
		if profs[i] != again[i] {
			t.Fatalf("assignment differs at %d", i)
		}
	}
}

func TestProfileAllows(t *testing.T) {
	base := pskstore.Key{Identity: []byte("d"), Secret: make([]byte, 32)}
	ke := base
	ke.Modes = pskstore.ModeDHE | pskstore.ModeKE
	legacy := base
	legacy.Legacy = true
	only12 := legacy
	only12.Versions = pskstore.DTLS12
	lowKE := ke
	lowKE.AllowLowEntropy = true
	tests := []struct {
		profile string
		key     pskstore.Key
		want    bool
	}{
		{"1.3-dhe", base, true},
		{"1.3-ke", base, false},
		{"1.3-ke", ke, true},
		{"1.3-ke", lowKE, false}, // R2: a low-entropy key never gets psk_ke
		{"1.2-ccm8", base, false},
		{"1.2-ccm8", legacy, true},
		{"1.2-ecdhe", base, true},
		{"1.3-dhe", only12, false},
		{"1.2-gcm", only12, true},
	}
	for _, tt := range tests {
		if got := findProfile(tt.profile).allows(tt.key); got != tt.want {
			t.Errorf("%s allows %+v = %v, want %v", tt.profile, tt.key, got, tt.want)
		}
	}
}

func TestParsePattern(t *testing.T) {
	if p, err := parsePattern("update=50,notify=30,read=20", false); err != nil || p.String() != "update=50,notify=30,read=20" || !p.has(opRead) {
		t.Errorf("lwm2m pattern: %v %v", p, err)
	}
	if _, err := parsePattern("echo", false); err == nil {
		t.Error("echo accepted in LwM2M mode")
	}
	if _, err := parsePattern("update", true); err == nil {
		t.Error("update accepted in raw mode")
	}
	if p, err := parsePattern("echo", true); err != nil || !p.has(opEcho) {
		t.Errorf("raw pattern: %v %v", p, err)
	}
}

func TestFlagValidation(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"no keys", []string{"--devices", "3"}},
		{"devices 0", []string{"--keys", "k.yaml", "--devices", "0"}},
		{"churn above 1", []string{"--keys", "k.yaml", "--churn", "1.5"}},
		{"bad msg-rate", []string{"--keys", "k.yaml", "--msg-rate", "fast"}},
		{"no-dtls without raw", []string{"--keys", "k.yaml", "--no-dtls"}},
		{"read without backend", []string{"--keys", "k.yaml", "--pattern", "read"}},
		{"gen-keys without out", []string{"--gen-keys", "5"}},
		{"bad mix", []string{"--keys", "k.yaml", "--mix", "1.4-dhe"}},
		{"stray argument", []string{"--keys", "k.yaml", "extra"}},
		{"negative key offset", []string{"--keys", "k.yaml", "--key-offset", "-1"}},
		{"hold without raw", []string{"--keys", "k.yaml", "--hold", "--duration", "0"}},
		{"hold sending", []string{"--keys", "k.yaml", "--raw", "--hold"}},
		{"hold with warmup", []string{"--keys", "k.yaml", "--raw", "--hold", "--msg-rate", "0", "--warmup"}},
		{"hold without dtls", []string{"--raw", "--no-dtls", "--hold", "--msg-rate", "0"}},
		{"warmup without raw", []string{"--keys", "k.yaml", "--warmup"}},
		{"wake-after negative", []string{"--keys", "k.yaml", "--raw", "--wake-after", "-1s"}},
		{"port base without source-ips", []string{"--keys", "k.yaml", "--raw", "--source-port-base", "20000"}},
		{"port base too low", []string{"--keys", "k.yaml", "--raw", "--source-ips", "4", "--source-port-base", "80"}},
		{"ports past 65535", []string{"--keys", "k.yaml", "--raw", "--source-ips", "2", "--source-port-base", "65000", "--devices", "5000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(tt.args, discard{})
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("parseFlags(%q) = %v, want a usage error", tt.args, err)
			}
		})
	}
	o, err := parseFlags([]string{"--keys", "k.yaml", "--backend", "127.0.0.1:5683", "--msg-rate", "max"}, discard{})
	if err != nil {
		t.Fatal(err)
	}
	if !o.msgMax || o.backendKind != backendLwM2M || o.pattern.String() != "update=50,notify=30,read=20" {
		t.Errorf("defaults with --backend: max %v kind %s pattern %s", o.msgMax, o.backendKind, o.pattern)
	}
	o, err = parseFlags([]string{"--raw", "--no-dtls", "--backend", "127.0.0.1:5683"}, discard{})
	if err != nil {
		t.Fatal(err)
	}
	if o.backendKind != backendEcho || o.pattern.String() != "echo=1" || o.mode() != "raw-udp" {
		t.Errorf("raw defaults: kind %s pattern %s mode %s", o.backendKind, o.pattern, o.mode())
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
