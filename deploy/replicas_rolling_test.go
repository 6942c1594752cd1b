package deploy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/lwm2m-gateway/gateway/internal/pgtest"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/postgres"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// TestReplicasRollingUpdateBinary (issue 11.5): the rolling update of
// kubernetes/replicas with the real binary and the ConfigMap's gateway.yaml
// as it is, except that each "pod" binds its own loopback address (its pod
// IP) instead of all interfaces. Two pods run in UTS namespaces named like
// the StatefulSet's pods (replica ids from the host names), with POD_IP and
// the DSN in the environment and the KEK file next to the configuration;
// two devices with Connection IDs hold sessions, one on each replica,
// each behind its own view of the load balancer. The update goes as the
// StatefulSet controller does it, highest ordinal first: SIGTERM, wait for
// the exit, the balancer sends the pod's devices to the other replica, the
// pod comes back under the same name on a new IP, ready only after its
// restore; then the next pod. Meanwhile each device sends an LwM2M Update
// with CoAP's retransmissions. Both devices finish the update on their
// first handshake; no gateway process handshakes; each restarted replica
// restored its session; the other replica relayed the device's records
// while its owner was away.
func TestReplicasRollingUpdateBinary(t *testing.T) {
	bin := staticBinary(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: each gateway gets the host name of a StatefulSet pod in a UTS namespace of its own")
	}
	_, dsn := pgtest.Schema(t)
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = backend.Close() })

	r := loadReplicas(t)
	kek := make([]byte, sealed.KEKSize)
	_, _ = rand.Read(kek)
	site := &rollingSite{t: t, bin: bin, dsn: dsn, kekHex: hex.EncodeToString(kek),
		config: string(gatewayConfigOf(t, r.ms, r.pods)), backend: backend.Addr().String(), name: r.name}
	devices := site.seed("rolling-a", "rolling-b")

	// Replica 1 is updated first (highest ordinal), then replica 0.
	pods := []*pod{site.start(0), site.start(1)}
	lbs := []*devsim.Balancer{newUDPBalancer(t, pods[1].dtlsAddr()), newUDPBalancer(t, pods[0].dtlsAddr())}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	devs := make([]*devsim.Device, len(devices))
	for i, k := range devices {
		d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: lbs[i].Addr().String(), Identity: k.Identity, Key: k.Secret, Endpoint: k.Endpoint})
		if err != nil {
			t.Fatalf("device %d: %v", i, err)
		}
		t.Cleanup(func() { _ = d.Close() })
		if _, err := d.Register(ctx); err != nil {
			t.Fatalf("device %d: register: %v", i, err)
		}
		devs[i] = d
	}
	// Device 0 (behind lbs[0]) is replica 1's, device 1 replica 0's.

	for step, ord := range []int{1, 0} {
		old := pods[ord]
		other := pods[1-ord]
		sigterm := time.Now()
		old.stop(t)
		if n := old.handedOff(t); n != 1 {
			t.Errorf("step %d: replica %d handed off %d sessions, want its 1", step, ord, n)
		}
		// The Service: every device the balancer sent to this pod now goes
		// to the other replica.
		for _, lb := range lbs {
			lb.Retarget(other.dtlsAddr())
		}
		// The devices send while the pod is away; CoAP retransmits.
		updates := make(chan error, len(devs))
		for _, d := range devs {
			go func() { updates <- d.Update(ctx) }()
		}
		exited := time.Now()
		pods[ord] = site.start(ord) // same name, new pod IP; ready after its restore
		ready := time.Now()
		for range devs {
			if err := <-updates; err != nil {
				t.Fatalf("step %d (replica %d restarted): Update: %v", step, ord, err)
			}
		}
		t.Logf("replica %d: SIGTERM to exit %v, restart to ready %v, exit to both Updates answered %v",
			ord, exited.Sub(sigterm).Round(time.Millisecond), ready.Sub(exited).Round(time.Millisecond), time.Since(exited).Round(time.Millisecond))
		if got := pods[ord].metric(t, `gateway_session_snapshots_total{event="restored"}`); got != 1 {
			t.Errorf("step %d: the restarted replica %d restored %v sessions, want 1", step, ord, got)
		}
		if got := other.metric(t, `gateway_replica_events_total{event="relayed"}`); got < 1 {
			t.Errorf("step %d: replica %d relayed %v datagrams to the restarted owner, want some", step, 1-ord, got)
		}
	}

	for i, d := range devs {
		if st := d.Stats(); st.Handshakes != 1 || st.SessionsLost != 0 {
			t.Errorf("device %d: %d handshakes, %d sessions lost; want its first handshake only", i, st.Handshakes, st.SessionsLost)
		}
		reg, ok := backend.Registration(devices[i].Endpoint)
		if !ok || reg.Updates < 2 {
			t.Errorf("device %d: registration %+v, want the one Register and both Updates", i, reg)
		}
	}
	for _, p := range pods {
		if got := p.metric(t, `gateway_handshakes_total`); got != 0 {
			t.Errorf("replica %d after the update: %v handshakes, want 0", p.ordinal, got)
		}
	}
	// The backend reaches the devices through the restored upstream sockets.
	for i, k := range devices {
		if _, err := backend.Read(ctx, k.Endpoint, "/3/0/0"); err != nil {
			t.Errorf("device %d: backend Read after the update: %v", i, err)
		}
	}
}

// rollingSite starts gateway "pods" of the replicas' StatefulSet.
type rollingSite struct {
	t       *testing.T
	bin     string
	dsn     string
	kekHex  string
	config  string // the ConfigMap's gateway.yaml
	backend string
	name    string // the StatefulSet's
}

// seed stores one key per name in the database, sealed under the KEK.
func (s *rollingSite) seed(names ...string) []pskstore.Key {
	t := s.t
	kek, err := sealed.ParseKEK([]byte(s.kekHex))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := postgres.Open(ctx, s.dsn, postgres.WithKEK(kek))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var keys []pskstore.Key
	for _, n := range names {
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		keys = append(keys, pskstore.Key{Identity: []byte("device-" + n), Secret: secret, Endpoint: "urn:dev:" + n})
	}
	if err := st.PutMany(ctx, keys, nil); err != nil {
		t.Fatal(err)
	}
	return keys
}

// podIP picks a loopback address for a pod: 127.x.y.z, never 127.0.0.1.
func podIP(t *testing.T) string {
	t.Helper()
	var b [3]byte
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(254))
		if err != nil {
			t.Fatal(err)
		}
		b[i] = byte(n.Int64() + 1)
	}
	return fmt.Sprintf("127.%d.%d.%d", b[0], b[1], b[2])
}

// pod is one gateway process of the StatefulSet.
type pod struct {
	ordinal int
	ip      string
	cmd     *exec.Cmd
	log     *procLog
	exited  chan struct{}
	err     error // after exited
}

// start runs pod ordinal of the StatefulSet on a fresh pod IP and waits
// until its /readyz answers 200.
func (s *rollingSite) start(ordinal int) *pod {
	t := s.t
	t.Helper()
	p := &pod{ordinal: ordinal, ip: podIP(t), log: &procLog{}, exited: make(chan struct{})}
	cfg := s.config
	for _, r := range []struct{ old, new string }{
		{`address: ":5684"`, fmt.Sprintf("address: %q", p.ip+":5684")},
		{`link_address: ":5685"`, fmt.Sprintf("link_address: %q", p.ip+":5685")},
		{`address: ":9090"`, fmt.Sprintf("address: %q", p.ip+":9090")},
		{`"lwm2m-dm.lwm2m.svc.cluster.local:5683"`, strconv.Quote(s.backend)},
	} {
		if strings.Count(cfg, r.old) != 1 {
			t.Fatalf("the ConfigMap's gateway.yaml does not hold %s exactly once", r.old)
		}
		cfg = strings.Replace(cfg, r.old, r.new, 1)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "gateway.yaml"), cfg, 0o400, -1)
	writeFile(t, filepath.Join(dir, "kek"), s.kekHex+"\n", 0o400, -1)

	host := fmt.Sprintf("%s-%d", s.name, ordinal)
	p.cmd = exec.Command(os.Args[0], s.bin, "serve", "--config", filepath.Join(dir, "gateway.yaml"))
	p.cmd.Env = []string{hostnameEnv + "=" + host, "POD_IP=" + p.ip, "GATEWAY_PG_DSN=" + s.dsn}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUTS}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", host, err)
	}
	go func() {
		// Wait only after the log is read to its end: Wait closes the
		// pipe, and the last lines (flushed at exit) would be lost.
		p.log.read(stderr)
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	// A starting replica answers /readyz 503 until its sessions are
	// restored; the kubelet's readiness probe, and the rolling update,
	// wait for 200.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if code, _ := p.get("/readyz"); code == http.StatusOK {
			break
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before it was ready: %v\n%s", host, p.err, p.log)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 2 minutes\n%s", host, p.log)
		}
	}
	if got := p.log.field("sessions restored", "component"); got != "gateway" {
		t.Fatalf("%s: ready without its restore log line\n%s", host, p.log)
	}
	return p
}

func (p *pod) dtlsAddr() *net.UDPAddr { return &net.UDPAddr{IP: net.ParseIP(p.ip), Port: 5684} }

// get fetches path from the pod's admin listener.
func (p *pod) get(path string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(p.ip, "9090") + path)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric sums the samples of /metrics whose name and labels start with
// prefix (`gateway_handshakes_total`, `gateway_x{event="y"}`).
func (p *pod) metric(t *testing.T, prefix string) float64 {
	t.Helper()
	code, body := p.get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("replica %d: /metrics answered %d", p.ordinal, code)
	}
	name, labels, _ := strings.Cut(strings.TrimSuffix(prefix, "}"), "{")
	sum := 0.0
	for _, line := range strings.Split(body, "\n") {
		sample, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || (sample != name && !strings.HasPrefix(sample, name+"{")) ||
			!strings.Contains(sample, labels) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("replica %d: /metrics line %q", p.ordinal, line)
		}
		sum += v
	}
	return sum
}

// stop sends SIGTERM, as the kubelet does, and waits for a clean exit.
func (p *pod) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		t.Fatalf("replica %d did not exit within a minute of SIGTERM", p.ordinal)
	}
	if p.err != nil {
		t.Fatalf("replica %d: exit after SIGTERM: %v\n%s", p.ordinal, p.err, p.log)
	}
}

// handedOff is the number of snapshots the handoff wrote, from its log line.
func (p *pod) handedOff(t *testing.T) int {
	t.Helper()
	v := p.log.field("sessions handed off", "snapshots")
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("replica %d: no handoff log line\n%s", p.ordinal, p.log)
	}
	return n
}

// procLog keeps a gateway's JSON log lines.
type procLog struct {
	mu    sync.Mutex
	lines []map[string]any
	raw   strings.Builder
}

func (l *procLog) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		_ = json.Unmarshal(sc.Bytes(), &m)
		l.mu.Lock()
		l.raw.WriteString(sc.Text() + "\n")
		if m != nil {
			l.lines = append(l.lines, m)
		}
		l.mu.Unlock()
	}
}

// field returns key of the last line whose msg is msg, or "".
func (l *procLog) field(msg, key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.lines) - 1; i >= 0; i-- {
		if l.lines[i]["msg"] == msg {
			if v, ok := l.lines[i][key]; ok {
				return fmt.Sprint(v)
			}
			return ""
		}
	}
	return ""
}

func (l *procLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

func newUDPBalancer(t *testing.T, target *net.UDPAddr) *devsim.Balancer {
	t.Helper()
	b, err := devsim.NewBalancer(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
