package deploy

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/lwm2m-gateway/gateway/config"
)

// Memory sizing. A pod or a unit that reaches its memory limit is killed
// with every session; one at limits.max_sessions drops new ClientHellos and
// keeps the others. So the session cap must fit the memory, at the memory a
// session costs as measured: bench/BENCHMARKS.md's sizing row, written by
// the scale step of make bench (bench/runner/scalerows.go) — the RSS of a
// session that has forwarded, with the kernel memory of its upstream
// socket, and the gateway's own RSS before its sessions with as many keys
// loaded as the step has sessions — plus the handshake headroom: the
// largest rise of the gateway's RSS during the flood scenario, which fills
// every admission cap (limits.max_handshakes, max_embryonic) with pion
// connections. These tests read all three from BENCHMARKS.md, so a new
// benchmark run that changes them fails until the manifests follow: in
// both directions, since a cap far below the memory wastes it.

// sizing is what BENCHMARKS.md measured, in bytes.
type sizing struct {
	perSession float64 // a forwarding session: RSS and its socket's kernel memory
	perKB      string  // the same as BENCHMARKS.md writes it, "8.2"
	base       float64 // RSS of the gateway before its sessions
	headroom   float64 // RSS that handshakes in progress take at the admission caps
}

var floodRow = regexp.MustCompile(`(?m)^\| Flood [^|]*gateway RSS before → peak[^|]*\| ([0-9.]+) → ([0-9.]+) → [0-9.]+ MB \|`)

var sizingRow = regexp.MustCompile(`(?m)^\| Sizing: memory per session that forwards [^|]*\| ([0-9.]+) KB \|(?:[^|]*\|){4} gateway before any session ([0-9.]+) MB`)

func benchSizing(t *testing.T) sizing {
	t.Helper()
	data, err := os.ReadFile("../bench/BENCHMARKS.md")
	if err != nil {
		t.Fatal(err)
	}
	m := sizingRow.FindStringSubmatch(string(data))
	if m == nil {
		t.Fatal("bench/BENCHMARKS.md: no sizing row (make bench writes it when run as root): the table changed, fix the pattern")
	}
	var s sizing
	kb, err1 := strconv.ParseFloat(m[1], 64)
	mb, err2 := strconv.ParseFloat(m[2], 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("bench/BENCHMARKS.md sizing row: %v %v", err1, err2)
	}
	s.perSession, s.perKB, s.base = kb*1024, m[1], mb*(1<<20)
	floods := floodRow.FindAllStringSubmatch(string(data), -1)
	if floods == nil {
		t.Fatal("bench/BENCHMARKS.md: no flood RSS row: the table changed, fix the pattern")
	}
	for _, f := range floods {
		before, _ := strconv.ParseFloat(f[1], 64)
		peak, _ := strconv.ParseFloat(f[2], 64)
		s.headroom = max(s.headroom, (peak-before)*(1<<20))
	}
	return s
}

// need is the memory maxSessions sessions take, by the benchmark.
func (s sizing) need(maxSessions int) float64 {
	return s.base + float64(maxSessions)*s.perSession + s.headroom
}

// check holds a memory budget (GOMEMLIMIT, the soft limit the Go runtime
// works to stay under, and the hard limit) to maxSessions: the sessions fit
// under the soft limit, the soft limit under the hard one with room for
// what the runtime does not count, and the sessions use most of it.
func (s sizing) check(t *testing.T, where string, maxSessions int, soft, hard int64) {
	t.Helper()
	need := s.need(maxSessions)
	switch {
	case need > float64(soft):
		t.Errorf("%s: limits.max_sessions %d x %s KB + %.0f MiB + %.0f MiB for handshakes = %.0f MiB does not fit GOMEMLIMIT %d MiB: lower the cap or raise the memory",
			where, maxSessions, s.perKB, s.base/(1<<20), s.headroom/(1<<20), need/(1<<20), soft>>20)
	case need < 0.6*float64(soft):
		t.Errorf("%s: limits.max_sessions %d x %s KB + %.0f MiB + %.0f MiB for handshakes = %.0f MiB uses under 60%% of GOMEMLIMIT %d MiB: raise the cap or lower the memory",
			where, maxSessions, s.perKB, s.base/(1<<20), s.headroom/(1<<20), need/(1<<20), soft>>20)
	}
	if float64(soft) > 0.9*float64(hard) {
		t.Errorf("%s: GOMEMLIMIT %d MiB is above 90%% of the memory limit %d MiB", where, soft>>20, hard>>20)
	}
}

// statesFigure checks that a file's sizing comment quotes the benchmark's
// per-session figure, so the prose follows the numbers too.
func statesFigure(t *testing.T, file string, s sizing) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if want := s.perKB + " KB per session"; !strings.Contains(string(data), want) {
		t.Errorf("%s does not say %q (bench/BENCHMARKS.md's sizing row)", file, want)
	}
}

// TestKubernetesSizing: the Deployment's GOMEMLIMIT and memory limit hold
// the ConfigMap's limits.max_sessions at the measured cost of a session,
// and the request reserves it.
func TestKubernetesSizing(t *testing.T) {
	s := benchSizing(t)
	ms := loadManifests(t)
	c := loadDeployment(t, ms).Spec.Template.Spec.Containers[0]
	cfg, err := config.Parse(gatewayConfig(t, ms))
	if err != nil {
		t.Fatal(err)
	}
	soft, hard, req := memoryBudget(t, c)
	s.check(t, "kubernetes", cfg.Limits.MaxSessions, soft, hard)
	if float64(req) < s.need(cfg.Limits.MaxSessions) {
		t.Errorf("requests.memory %s is below what limits.max_sessions takes: a full node would evict the pod", c.Resources.Requests["memory"])
	}
	statesFigure(t, "kubernetes/deployment.yaml", s)
	statesFigure(t, "kubernetes/configmap.yaml", s)
}

// memoryBudget returns the container's GOMEMLIMIT, memory limit and memory
// request, in bytes.
func memoryBudget(t *testing.T, c container) (soft, hard, req int64) {
	t.Helper()
	var err error
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			soft, err = quantity(strings.TrimSuffix(e.Value, "B"))
			soft /= 1000
		}
	}
	hard, err2 := quantity(c.Resources.Limits["memory"])
	req, err3 := quantity(c.Resources.Requests["memory"])
	if soft == 0 || err != nil || err2 != nil || err3 != nil {
		t.Fatalf("GOMEMLIMIT %d (%v), limits.memory %q (%v), requests.memory %q (%v): all required", soft, err, c.Resources.Limits["memory"], err2, c.Resources.Requests["memory"], err3)
	}
	return soft, hard / 1000, req / 1000
}

// TestSystemdSizing: the unit's GOMEMLIMIT and MemoryMax hold the
// limits.max_sessions it is sized for (and the systemd README sets) at the
// measured cost of a session.
func TestSystemdSizing(t *testing.T) {
	s := benchSizing(t)
	svc := unit(t, "systemd/gateway.service")["Service"]
	var soft, hard int64
	var err error
	for _, env := range svc["Environment"] {
		if v, ok := strings.CutPrefix(env, "GOMEMLIMIT="); ok {
			soft, err = quantity(strings.TrimSuffix(v, "B"))
			soft /= 1000
		}
	}
	if mm := svc["MemoryMax"]; len(mm) == 1 {
		hard, err = systemdBytes(mm[0])
	}
	if soft == 0 || hard == 0 || err != nil {
		t.Fatalf("Environment=GOMEMLIMIT=… and MemoryMax= required (%v)", err)
	}
	data, err := os.ReadFile("systemd/gateway.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`sized for limits\.max_sessions: (\d+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal(`systemd/gateway.service does not say which limits.max_sessions it is "sized for"`)
	}
	n, _ := strconv.Atoi(string(m[1]))
	s.check(t, "systemd", n, soft, hard)
	readme, err := os.ReadFile("systemd/README.md")
	if err != nil || !strings.Contains(string(readme), fmt.Sprintf("max_sessions: %d", n)) {
		t.Errorf("systemd/README.md does not set limits.max_sessions: %d, which the unit is sized for", n)
	}
	statesFigure(t, "systemd/gateway.service", s)
}

// systemdBytes parses MemoryMax= (systemd: K, M, G, T are powers of 1024).
func systemdBytes(v string) (int64, error) {
	mult := map[byte]int64{'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}
	if m, ok := mult[v[len(v)-1]]; ok {
		n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
		return n * m, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// TestBenchSizingPatterns: the figures come from the table as written.
func TestBenchSizingPatterns(t *testing.T) {
	s := benchSizing(t)
	if s.perSession < 1024 || s.perSession > 10<<20 || s.base < 1<<20 || s.base > 4<<30 || s.headroom < 0 || s.headroom > 4<<30 {
		t.Errorf("implausible figures read from BENCHMARKS.md: %.0f bytes per session, %.0f bytes base, %.0f bytes handshake headroom", s.perSession, s.base, s.headroom)
	}
}

// TestSecretModeIsTheGatewaysGroup: secret.yaml says the kubelet makes the
// projected 0400 files 0440 for fsGroup and that this is the gateway's own
// group, which the gateway's permission check accepts (pskstore/file
// CheckMode). That holds only while fsGroup is runAsGroup.
func TestSecretModeIsTheGatewaysGroup(t *testing.T) {
	sc := loadDeployment(t, loadManifests(t)).Spec.Template.Spec.SecurityContext
	if sc.FSGroup == nil || sc.RunAsGroup == nil || *sc.FSGroup != *sc.RunAsGroup {
		t.Fatalf("fsGroup %v, runAsGroup %v: the Secret files' group (fsGroup) must be the gateway's own", sc.FSGroup, sc.RunAsGroup)
	}
	data, err := os.ReadFile("kubernetes/secret.yaml")
	if err != nil || !strings.Contains(string(data), "0440") || !strings.Contains(string(data), "CheckMode") {
		t.Error("secret.yaml does not explain the 0440 mode and the gateway's check of it")
	}
}
