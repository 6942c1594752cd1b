package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/internal/cli"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// TestHelpEveryCommand: --help on every command and psk subcommand exits 0
// and prints that command's own usage on stdout, nothing on stderr.
func TestHelpEveryCommand(t *testing.T) {
	cases := map[string]string{
		"serve": "usage: gateway serve --config FILE", "check-config": "usage: gateway check-config FILE",
		"demo": "usage: gateway demo", "version": "usage: gateway version", "psk": "usage: gateway psk <command>",
		// Every psk command's own: internal/pskcli TestPSKHelpEveryCommand.
		"psk gen": "usage: gateway psk gen", "psk rekey": "usage: gateway psk rekey",
	}
	for cmd, want := range cases {
		for _, help := range []string{"--help", "-h"} {
			t.Run(cmd+" "+help, func(t *testing.T) {
				code, out, errOut := runCmd(append(strings.Fields(cmd), help)...)
				if code != 0 || !strings.HasPrefix(out, want) || errOut != "" {
					t.Errorf("exit %d\nstdout %q\nstderr %q\nwant exit 0 and stdout starting %q", code, out, errOut, want)
				}
			})
		}
	}
}

// TestUsageErrors: a command-line error exits 2 and prints the command's
// own usage, not the top-level one.
func TestUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"serve"}, []string{"--config FILE is required", "usage: gateway serve --config FILE", "-config FILE"}},
		{[]string{"serve", "--bogus"}, []string{"flag provided but not defined: -bogus", "usage: gateway serve"}},
		{[]string{"check-config"}, []string{"missing FILE", "usage: gateway check-config FILE"}},
		{[]string{"check-config", "a.yaml", "b.yaml"}, []string{"1 unexpected arguments", "usage: gateway check-config"}},
		{[]string{"demo", "--devices", "0"}, []string{"--devices must be between 1 and 1000", "usage: gateway demo"}},
		{[]string{"psk", "list", "--bogus"}, []string{"usage: gateway psk list"}},
		{[]string{"psk", "gen", "--config", "x.yaml"}, []string{"--identity ID", "usage: gateway psk gen", "-endpoint"}},
		{[]string{"frobnicate"}, []string{`unknown command "frobnicate"`, "usage: gateway <command>"}},
	} {
		code, out, errOut := runCmd(tt.args...)
		if code != cli.ExitUsage || out != "" {
			t.Errorf("gateway %s: exit %d, stdout %q; want 2 and nothing", strings.Join(tt.args, " "), code, out)
		}
		for _, w := range tt.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("gateway %s: stderr lacks %q:\n%s", strings.Join(tt.args, " "), w, errOut)
			}
		}
		if strings.Contains(errOut, "commands:") && tt.args[0] != "frobnicate" {
			t.Errorf("gateway %s prints the top-level usage:\n%s", strings.Join(tt.args, " "), errOut)
		}
	}
}

// TestVersion: gateway version and --version say which build runs, and
// gateway_build_info carries the same.
func TestVersion(t *testing.T) {
	b := buildInfo()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, _ := runCmd(args...)
		if code != 0 || out != b.String()+"\n" || !strings.HasPrefix(out, "gateway ") || !strings.Contains(out, ", commit ") {
			t.Errorf("gateway %s: exit %d, %q", args[0], code, out)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(b.collector())
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "gateway_build_info" || mfs[0].Metric[0].GetGauge().GetValue() != 1 {
		t.Fatalf("gateway_build_info: %v, %v", mfs, err)
	}
	labels := map[string]string{}
	for _, l := range mfs[0].Metric[0].Label {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != b.Version || !strings.HasPrefix(labels["commit"], b.Commit) || labels["goversion"] != b.Go {
		t.Errorf("labels %v, build %+v", labels, b)
	}
}

// checkEnv is a configuration with a file store of one key and a backend.
func checkEnv(t *testing.T, backend string, keys ...pskstore.Key) (dir, cfgPath string) {
	t.Helper()
	dir = t.TempDir()
	cfgPath = filepath.Join(dir, "gateway.yaml")
	writeFile(t, cfgPath, []byte("backends: {dm: {address: \""+backend+"\"}}\nstore: {path: keys.yaml}\n"))
	if err := file.Save(filepath.Join(dir, "keys.yaml"), keys); err != nil {
		t.Fatal(err)
	}
	return dir, cfgPath
}

// TestCheckConfigReportsWarnings: check-config prints what serve would
// warn about (file mode, R7 findings, an unresolvable backend, plaintext
// keys, no tag key yet), exits 0, and writes nothing.
func TestCheckConfigReportsWarnings(t *testing.T) {
	// No DNS server is asked: the resolver fails every lookup, as one would
	// for a name that does not exist.
	defer func(r *net.Resolver) { resolver = r }(resolver)
	resolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS in tests")
	}}
	a := pskstoretestKey(t, "Device-1")
	b := pskstoretestKey(t, "device-1") // R7 (should): look-alike
	dir, cfgPath := checkEnv(t, "lwm2m.invalid:5683", a, b)
	if err := os.Chmod(filepath.Join(dir, "keys.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd("check-config", cfgPath)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"warning: psk store: keys are stored in plaintext",
		"warning: psk store: no identity-tag key yet",
		"mode 0644: readable by other users",
		"policy R7 (should)", "nfkc and case folding",
		`warning: backend dm: host "lwm2m.invalid" does not resolve`,
		"file store with 2 keys, 5 warnings)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "tag.key")); err == nil {
		t.Error("check-config wrote a tag key")
	}
	code, out, _ = runCmd("check-config", filepath.Join(dir, "missing.yaml"))
	if code != 1 || out != "" {
		t.Errorf("check-config of a missing file: exit %d, %q", code, out)
	}
}

// TestTagKeyNextToStore: without store.tag_key_file, the first psk command
// keeps a tag key next to the key file and says so; the gateway's store
// opened later tags identities alike (R9).
func TestTagKeyNextToStore(t *testing.T) {
	dir, cfgPath := checkEnv(t, "127.0.0.1:5683")
	r := runPSK(t, "", "gen", "--config", cfgPath, "--identity", "dev-1", "--endpoint", "urn:dev:1")
	r.expect(t, 0, nil, []string{"note: generated the identity-tag key " + filepath.Join(dir, "tag.key")})
	fi, err := os.Stat(filepath.Join(dir, "tag.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("tag key: %v, %v", fi, err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	ks, err := openStore(cfg, openOptions{log: zap.New(core), makeTagKey: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	if tag := ks.tag([]byte("dev-1")); !strings.Contains(r.stdout, "dev-1 ("+tag+")") {
		t.Errorf("the gateway tags dev-1 %s; psk gen printed:\n%s", tag, r.stdout)
	}
	if logs.FilterMessageSnippet("generated the identity-tag key").Len() != 0 {
		t.Error("a second open generated another tag key")
	}
	r = runPSK(t, "", "list", "--config", cfgPath)
	if strings.Contains(r.stderr, "note: generated") || !strings.Contains(r.stdout, ks.tag([]byte("dev-1"))) {
		t.Errorf("list: %s%s", r.stdout, r.stderr)
	}
}

// TestReload: SIGHUP's reload logs one error line when the file is bad,
// "configuration reloaded" only on success, names the fields that need a
// restart, and counts both outcomes.
func TestReload(t *testing.T) {
	_, cfgPath := checkEnv(t, "127.0.0.1:5683", pskstoretestKey(t, "dev-1"))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	ks, err := openStore(cfg, openOptions{log: log})
	if err != nil {
		t.Fatal(err)
	}
	level := zap.NewAtomicLevelAt(zapcore.InfoLevel)
	r := newReloader(cfgPath, cfg, ks.Store, level, log)
	count := func(result string) float64 {
		mfs, _ := gather(t, r)
		return mfs["gateway_config_reloads_total{result="+result+"}"]
	}
	good, _ := os.ReadFile(cfgPath)

	writeFile(t, cfgPath, []byte("dtls: {mtu: 10}\nbackends: {dm: {address: \"127.0.0.1:5683\"}}\n"))
	r.reload()
	errs := logs.FilterLevelExact(zapcore.ErrorLevel).All()
	if len(errs) != 1 || !strings.Contains(errs[0].ContextMap()["err"].(string), "dtls.mtu") || errs[0].Stack != "" {
		t.Fatalf("a bad file logged %d error lines: %+v", len(errs), errs)
	}
	if logs.FilterMessage("configuration reloaded").Len() != 0 || count("failed") != 1 {
		t.Fatal("a refused reload said reloaded, or was not counted")
	}

	writeFile(t, cfgPath, append(good, "log: {level: debug}\nsessions: {idle_timeout: 30m}\ndtls: {mtu: 1100}\n"...))
	r.reload()
	warn := logs.FilterMessageSnippet("take effect after a restart").All()
	if len(warn) != 1 || !strings.Contains(warn[0].Message, "sessions.idle_timeout") || !strings.Contains(warn[0].Message, "dtls.mtu") ||
		strings.Contains(warn[0].Message, "log.level") {
		t.Fatalf("restart warning %+v", warn)
	}
	if level.Level() != zapcore.DebugLevel || logs.FilterMessage("configuration reloaded").Len() != 1 || count("ok") != 1 {
		t.Fatal("a good reload did not apply the level, say so or count")
	}

	// A key file that no longer loads: the last good keys stay, one error.
	writeFile(t, filepath.Join(filepath.Dir(cfgPath), "keys.yaml"), []byte("keys: [\n"))
	r.reload()
	if logs.FilterMessageSnippet("the key file does not load").Len() != 1 || count("failed") != 2 {
		t.Fatal("a key file that does not load was not reported and counted")
	}
	if _, err := ks.Lookup(context.Background(), []byte("dev-1")); err != nil {
		t.Fatalf("the last good keys are gone: %v", err)
	}
	mfs, _ := gather(t, r)
	if mfs["gateway_key_file_reloads_total{result=failed}"] != 1 {
		t.Errorf("key file reload failures not exported: %v", mfs)
	}
}

// gather returns the collector's samples by name{label=value}.
func gather(t *testing.T, c prometheus.Collector) (map[string]float64, error) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			name := mf.GetName()
			for _, l := range m.Label {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			out[name] = m.GetCounter().GetValue()
		}
	}
	return out, err
}
