package deptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/lwm2m-gateway/gateway"

// pkg is what `go list -json` says of one package.
type pkg struct {
	ImportPath                string
	Imports                   []string
	TestImports, XTestImports []string
}

// rule is one arrow of DESIGN.md §2: packages under from may import, of
// this module, only packages under the allowed prefixes (their own tree
// always).
type rule struct {
	from    string
	allowed []string
}

// rules are the §2 table, top to bottom: dependencies point down and never
// back up. "internal" is the module's helper packages.
var rules = []rule{
	{"config", nil},
	{"lwm2m", nil},
	{"pskstore", nil},
	{"statestore", nil},
	{"gateway", []string{"pskstore", "lwm2m", "config", "statestore", "internal"}},
	// The command-line conventions every command shares.
	{"internal/cli", nil},
	// The psk tool administers stores (pskstore and its backends) named by
	// a configuration; it is handed how to open them and never reaches the
	// data path.
	{"internal/pskcli", []string{"config", "pskstore", "internal/cli"}},
	// The admin endpoint shows a running gateway; it reads no configuration.
	{"internal/admin", []string{"gateway", "pskstore"}},
}

// upward are the packages no library package may import, in code or tests:
// commands, tools and the end-to-end tests sit above everything.
var upward = []string{"cmd", "integration", "deploy", "bench", "tools"}

func under(path, prefix string) bool { return path == prefix || strings.HasPrefix(path, prefix+"/") }

// violations lists every import of pkgs that points the wrong way.
func violations(pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		rel := strings.TrimPrefix(p.ImportPath, module+"/")
		library := !slices.ContainsFunc(upward, func(u string) bool { return under(rel, u) })
		check := func(imports []string, what string, code bool) {
			for _, imp := range imports {
				if !under(imp, module) {
					continue
				}
				dep := strings.TrimPrefix(imp, module+"/")
				if library && slices.ContainsFunc(upward, func(u string) bool { return under(dep, u) }) {
					out = append(out, rel+" "+what+" imports "+dep+", which sits above it")
				}
				for _, r := range rules {
					if !code || !under(rel, r.from) || under(dep, r.from) {
						continue
					}
					if !slices.ContainsFunc(r.allowed, func(a string) bool { return under(dep, a) }) {
						out = append(out, rel+" imports "+dep+": DESIGN.md §2 lets "+r.from+" import "+allowedText(r))
					}
				}
			}
		}
		check(p.Imports, "", true)
		check(append(p.TestImports, p.XTestImports...), "(tests)", false)
	}
	return out
}

func allowedText(r rule) string {
	if len(r.allowed) == 0 {
		return "nothing of ours"
	}
	return "only " + strings.Join(r.allowed, ", ")
}

// TestImportArrows runs go list over the module and fails on every import
// that breaks DESIGN.md §2.
func TestImportArrows(t *testing.T) {
	cmd := exec.Command("go", "list", "-json", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	for _, want := range []string{"config", "gateway", "pskstore", "pskstore/file", "lwm2m", "cmd/gateway", "internal/cli", "internal/pskcli"} {
		if !slices.ContainsFunc(pkgs, func(p pkg) bool { return p.ImportPath == module+"/"+want }) {
			t.Fatalf("go list did not list %s: the test would check nothing", want)
		}
	}
	for _, v := range violations(pkgs) {
		t.Error(v)
	}
}

// TestViolationsFound: the checker itself flags arrows that point up, so
// TestImportArrows cannot pass vacuously.
func TestViolationsFound(t *testing.T) {
	m := func(s string) string { return module + "/" + s }
	for _, tt := range []struct {
		name string
		p    pkg
		bad  bool
	}{
		{"pskstore imports gateway", pkg{ImportPath: m("pskstore"), Imports: []string{m("gateway")}}, true},
		{"pskstore/file imports config", pkg{ImportPath: m("pskstore/file"), Imports: []string{m("config"), "os"}}, true},
		{"config imports pskstore", pkg{ImportPath: m("config"), Imports: []string{m("pskstore")}}, true},
		{"lwm2m imports gateway", pkg{ImportPath: m("lwm2m"), Imports: []string{m("gateway")}}, true},
		{"gateway imports cmd", pkg{ImportPath: m("gateway"), Imports: []string{m("cmd/gateway")}}, true},
		{"gateway tests import integration", pkg{ImportPath: m("gateway"), TestImports: []string{m("integration")}}, true},
		{"gateway imports pskstore and lwm2m", pkg{ImportPath: m("gateway"), Imports: []string{m("pskstore"), m("lwm2m")}}, false},
		{"pskstore/file imports pskstore/sealed", pkg{ImportPath: m("pskstore/file"), Imports: []string{m("pskstore"), m("pskstore/sealed")}}, false},
		{"pskstore tests import an internal helper", pkg{ImportPath: m("pskstore/postgres"), TestImports: []string{m("internal/pgtest")}}, false},
		{"internal/cli imports config", pkg{ImportPath: m("internal/cli"), Imports: []string{m("config")}}, true},
		{"internal/pskcli imports gateway", pkg{ImportPath: m("internal/pskcli"), Imports: []string{m("pskstore"), m("gateway")}}, true},
		{"internal/pskcli imports the backends, config and cli", pkg{ImportPath: m("internal/pskcli"),
			Imports: []string{m("config"), m("pskstore/postgres"), m("pskstore/file"), m("pskstore/sealed"), m("internal/cli")}}, false},
		{"cmd imports everything", pkg{ImportPath: m("cmd/gateway"), Imports: []string{m("gateway"), m("config"), m("internal/demo")}}, false},
	} {
		if got := violations([]pkg{tt.p}); (len(got) > 0) != tt.bad {
			t.Errorf("%s: violations %q, want some: %v", tt.name, got, tt.bad)
		}
	}
}
