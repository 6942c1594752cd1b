package grafana

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/lwm2m-gateway/gateway/gateway"
	"github.com/lwm2m-gateway/gateway/pskstore/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	UID           string
	Templating    struct {
		List []struct {
			Type, Name string
			Query      any
		}
	}
	Panels []struct {
		ID         int
		Type       string
		Title      string
		Datasource struct{ Type, UID string }
		GridPos    struct{ X, Y, W, H int }
		Targets    []struct {
			RefID        string
			Expr         string
			LegendFormat string
			Datasource   struct{ Type, UID string }
		}
	}
}

func load(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile("gateway-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("gateway-dashboard.json: %v", err)
	}
	return d
}

var descRE = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// exported returns every metric the admin listener's /metrics serves, with
// its label names, from the collectors' descriptions.
func exported(t *testing.T) map[string]map[string]bool {
	t.Helper()
	store, err := memory.New()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := gateway.New(gateway.Config{
		Listeners: []gateway.Listener{{Address: "127.0.0.1:0"}},
		Store:     store,
		Backends:  map[string]string{"dm": "127.0.0.1:5683"},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	ch := make(chan *prometheus.Desc, 256)
	go func() {
		for _, c := range []prometheus.Collector{srv.Collector(), collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
			c.Describe(ch)
		}
		close(ch)
	}()
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read %s", d)
		}
		labels := map[string]bool{"job": true, "instance": true}
		for _, l := range strings.Split(m[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels[l] = true
			}
		}
		out[m[1]] = labels
	}
	if len(out["gateway_handshakes_total"]) == 0 || len(out["process_resident_memory_bytes"]) == 0 {
		t.Fatalf("collector descriptions not understood: %v", out)
	}
	return out
}

var (
	selectorRE = regexp.MustCompile(`\b((?:gateway|go|process)_[a-z0-9_]+)(\{[^}]*\})?`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	byRE       = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)
	legendRE   = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
)

// TestDashboardQueries: every query names exported metrics and their labels
// only, filters on the job and instance variables, and never an identity.
func TestDashboardQueries(t *testing.T) {
	d := load(t)
	metrics := exported(t)
	forbidden := map[string]bool{"identity": true, "identity_tag": true, "identity_hex": true, "endpoint": true, "ep": true}
	used := map[string]bool{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no query", p.Title)
		}
		for _, tg := range p.Targets {
			sels := selectorRE.FindAllStringSubmatch(tg.Expr, -1)
			if len(sels) == 0 {
				t.Errorf("panel %q: %s names no gateway, go or process metric", p.Title, tg.Expr)
			}
			var names []string
			for _, s := range sels {
				name := s[1]
				base := name
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if b, ok := strings.CutSuffix(name, suffix); ok && metrics[b] != nil {
						base = b
					}
				}
				labels, ok := metrics[base]
				if !ok {
					t.Errorf("panel %q: metric %s is not exported", p.Title, name)
					continue
				}
				if base != name {
					labels = map[string]bool{"le": true, "job": true, "instance": true}
				}
				used[base] = true
				names = append(names, base)
				if !strings.Contains(s[2], `job=~"$job"`) || !strings.Contains(s[2], `instance=~"$instance"`) {
					t.Errorf("panel %q: %s does not filter on $job and $instance", p.Title, s[0])
				}
				for _, m := range matcherRE.FindAllStringSubmatch(s[2], -1) {
					if !labels[m[1]] {
						t.Errorf("panel %q: %s has no label %s", p.Title, name, m[1])
					}
				}
			}
			var groupBy []string
			for _, m := range byRE.FindAllStringSubmatch(tg.Expr, -1) {
				for _, l := range strings.Split(m[1], ",") {
					groupBy = append(groupBy, strings.TrimSpace(l))
				}
			}
			for _, m := range legendRE.FindAllStringSubmatch(tg.LegendFormat, -1) {
				groupBy = append(groupBy, m[1])
			}
			for _, l := range groupBy {
				if forbidden[l] {
					t.Errorf("panel %q: uses label %s (R9)", p.Title, l)
				}
				found := false
				for _, n := range names {
					found = found || metrics[n][l] || (l == "le" && strings.HasPrefix(tg.Expr, "histogram_quantile"))
				}
				if !found {
					t.Errorf("panel %q: label %s is not a label of %v", p.Title, l, names)
				}
			}
			if tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %s: datasource %q, want ${datasource}", p.Title, tg.RefID, tg.Datasource.UID)
			}
			if strings.Contains(tg.Expr, "rate(") && !strings.Contains(tg.Expr, "[$window]") {
				t.Errorf("panel %q: %s: rates use [$window]", p.Title, tg.Expr)
			}
		}
	}
	for _, m := range []string{"gateway_handshakes_total", "gateway_sessions", "gateway_datagrams_total", "gateway_bytes_total",
		"gateway_refused_total", "gateway_dropped_datagrams_total", "gateway_store_lookup_seconds", "gateway_store_errors_total",
		"gateway_upstream_errors_total", "process_resident_memory_bytes", "go_goroutines"} {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
	for m := range metrics {
		if strings.HasPrefix(m, "gateway_") && !used[m] {
			t.Errorf("gateway metric %s is on no panel", m)
		}
	}
}

// TestDashboardLayout: Grafana 10+ schema, the datasource variable, unique
// panel IDs, and panels inside the 24-column grid without overlaps.
func TestDashboardLayout(t *testing.T) {
	d := load(t)
	if d.SchemaVersion < 36 || d.UID == "" {
		t.Errorf("schemaVersion %d, uid %q: want >= 36 and a uid", d.SchemaVersion, d.UID)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["window"] == "" || vars["job"] == "" || vars["instance"] == "" {
		t.Errorf("variables %v: want datasource (type datasource), job, instance, window", vars)
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d repeated", p.ID)
		}
		ids[p.ID] = true
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %q, want ${datasource}", p.Title, p.Datasource.UID)
		}
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Fatalf("panels %q and %q overlap", other, p.Title)
				}
				taken[cell{x, y}] = p.Title
			}
		}
	}
}
