package deploy

import (
	"fmt"
	"net"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/config"
	"gopkg.in/yaml.v3"
)

// The replicas that keep sessions (kubernetes/replicas): a StatefulSet
// whose pods share sessions through PostgreSQL (issue 11). These tests hold
// its manifests to the same rules as the base's and to what the gateway's
// cluster mechanism needs: stable replica ids from the pod ordinals, the
// link port reachable pod to pod, a grace period above the handoff,
// readiness after the restore, one pod away at a time.

// replicasDir holds the StatefulSet's kustomization.
const replicasDir = "kubernetes/replicas"

// coapLastRetransmission is when a CoAP device sends a confirmable
// message for the last time, after the first transmission, with the default
// transmission parameters and the smallest random factor (RFC 7252 §4.8:
// ACK_TIMEOUT 2 s doubled at each of the 4 retransmissions: 2, 6, 14, 30 s).
const coapLastRetransmission = 30 * time.Second

// statefulSet is what the tests read of a StatefulSet beyond the pod
// template it shares with a Deployment (decoded as a deployment).
type statefulSet struct {
	Spec struct {
		ServiceName         string `yaml:"serviceName"`
		PodManagementPolicy string `yaml:"podManagementPolicy"`
		MinReadySeconds     int    `yaml:"minReadySeconds"`
		UpdateStrategy      struct {
			Type          string `yaml:"type"`
			RollingUpdate *struct {
				MaxUnavailable *portRef `yaml:"maxUnavailable"`
				Partition      *int     `yaml:"partition"`
			} `yaml:"rollingUpdate"`
		} `yaml:"updateStrategy"`
		VolumeClaimTemplates []yaml.Node `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

// replicas is the directory's manifests, its StatefulSet (as its pod
// template and as itself) and the parsed configuration its pods mount.
type replicas struct {
	ms   []manifest
	name string
	pods deployment
	set  statefulSet
	cfg  *config.Config
}

func loadReplicas(t *testing.T) replicas {
	t.Helper()
	r := replicas{ms: loadManifestsIn(t, replicasDir)}
	m := one(t, r.ms, "StatefulSet")
	r.name = m.Metadata.Name
	m.decode(t, &r.pods)
	m.decode(t, &r.set)
	if len(r.pods.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("statefulset: want one container, got %d", len(r.pods.Spec.Template.Spec.Containers))
	}
	cfg, err := config.Parse(gatewayConfigOf(t, r.ms, r.pods))
	if err != nil {
		t.Fatalf("replicas ConfigMap gateway.yaml: %v", err)
	}
	r.cfg = cfg
	return r
}

func (r replicas) container() container { return r.pods.Spec.Template.Spec.Containers[0] }

// envVar is a container environment variable: a value, or where it comes
// from.
type envVar struct {
	Name, Value string
	FieldPath   string // valueFrom.fieldRef
	Secret, Key string // valueFrom.secretKeyRef
}

// env returns the container's environment variable name, or nil.
func (r replicas) env(name string) *envVar {
	for _, e := range r.container().Env {
		if e.Name != name {
			continue
		}
		v := &envVar{Name: e.Name, Value: e.Value}
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			v.FieldPath = e.ValueFrom.FieldRef.FieldPath
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			v.Secret, v.Key = e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key
		}
		return v
	}
	return nil
}

// linkPort is the port of cluster.link_address.
func (r replicas) linkPort(t *testing.T) int {
	t.Helper()
	_, p, err := net.SplitHostPort(r.cfg.Cluster.LinkAddress)
	n, err2 := strconv.Atoi(p)
	if err != nil || err2 != nil {
		t.Fatalf("cluster.link_address %q: want host:port", r.cfg.Cluster.LinkAddress)
	}
	return n
}

// TestReplicasManifestsWellFormed: every document parses and names its
// apiVersion, kind and name; one StatefulSet, its two Services (devices,
// headless), the ConfigMap, two Secrets (DSN, KEK) and the PDB.
func TestReplicasManifestsWellFormed(t *testing.T) {
	checkWellFormed(t, loadManifestsIn(t, replicasDir), map[string]int{
		"Kustomization": 1, "StatefulSet": 1, "Service": 2, "ConfigMap": 1, "Secret": 2, "PodDisruptionBudget": 1,
	})
}

// TestReplicasKustomizationListsEveryFile: the kustomization's resources
// are exactly the other YAML files of the directory.
func TestReplicasKustomizationListsEveryFile(t *testing.T) {
	checkKustomizationListsEveryFile(t, replicasDir)
}

// TestReplicasConfigMap: the mounted gateway.yaml passes config.Parse with
// everything replicas need (PostgreSQL for keys and snapshots, a KEK from
// a Secret, the cluster, Connection IDs), the replica id from the host name
// and the link address from $POD_IP, on the container's ports.
func TestReplicasConfigMap(t *testing.T) {
	r := loadReplicas(t)
	cfg, c := r.cfg, r.container()
	checkListenersAndAdmin(t, cfg, c)

	if cfg.Store.Type != config.StorePostgres || cfg.Store.DSN != "" || cfg.Store.DSNEnv == "" {
		t.Errorf("store: type %q, dsn set %v, dsn_env %q; want postgres with the DSN from the environment only",
			cfg.Store.Type, cfg.Store.DSN != "", cfg.Store.DSNEnv)
	}
	if e := r.env(cfg.Store.DSNEnv); e == nil || e.Value != "" || e.Secret == "" {
		t.Errorf("store.dsn_env %s: want a container variable from a Secret (secretKeyRef), got %+v", cfg.Store.DSNEnv, e)
	}
	// The KEK seals the keys, the snapshots and the link.
	if cfg.Store.KEKFile == "" || cfg.Store.KEKEnv != "" {
		t.Errorf("store: kek_file %q, kek_env %q; want the KEK as a file from a Secret", cfg.Store.KEKFile, cfg.Store.KEKEnv)
	}
	img := loadDockerfile(t)
	files, _ := projectedFiles(t, r.pods, path.Dir(img.configPath))
	secretFiles := map[string]string{"store.kek_file": cfg.Store.KEKFile}
	if cfg.Store.TagKeyFile != "" {
		secretFiles["store.tag_key_file"] = cfg.Store.TagKeyFile
	}
	checkSecretFiles(t, files, secretFiles)

	if cfg.Sessions.Snapshot != config.SnapshotPostgres {
		t.Errorf("sessions.snapshot %q, want %q", cfg.Sessions.Snapshot, config.SnapshotPostgres)
	}
	if !cfg.Cluster.Enabled || cfg.Cluster.ReplicaID != -1 {
		t.Errorf("cluster: enabled %v, replica_id %d; want enabled with the id from the pod ordinal (-1)",
			cfg.Cluster.Enabled, cfg.Cluster.ReplicaID)
	}
	if cfg.DTLS.ConnectionIDLength < 2 {
		t.Errorf("dtls.connection_id_length %d: the first byte names the replica", cfg.DTLS.ConnectionIDLength)
	}
	if got := c.containerPort(portRef{num: r.linkPort(t)}, "UDP"); got < 0 {
		t.Errorf("cluster.link_address %q: no UDP container port", cfg.Cluster.LinkAddress)
	}
	if host, _, _ := net.SplitHostPort(cfg.Cluster.LinkAddress); host != "" && host != "0.0.0.0" && host != "::" {
		t.Errorf("cluster.link_address %q: the other replicas reach the pod address", cfg.Cluster.LinkAddress)
	}
	// link_advertise empty: the gateway advertises $POD_IP with the link
	// port (cmd/gateway linkAdvertise).
	if cfg.Cluster.LinkAdvertise != "" {
		t.Errorf("cluster.link_advertise %q: want empty, so each pod advertises $POD_IP", cfg.Cluster.LinkAdvertise)
	}
	if e := r.env("POD_IP"); e == nil || e.FieldPath != "status.podIP" {
		t.Errorf("POD_IP: want the downward API's status.podIP, got %+v", e)
	}
	// While a pod restarts, the other replicas relay its devices' records
	// to the address it had; they learn its new one at their next renewal
	// (every lease/3). That delay must leave most of a CoAP exchange's
	// retransmissions to the restart itself.
	if refresh := time.Duration(cfg.Cluster.Lease) / 3; 3*refresh > coapLastRetransmission {
		t.Errorf("cluster.lease %v: the replicas learn a restarted pod's address up to %v late, over a third of CoAP's %v of retransmissions",
			time.Duration(cfg.Cluster.Lease), refresh, coapLastRetransmission)
	}
}

// TestReplicasConfigNeedsWhatClusterNeeds: the ConfigMap leans on config
// validation for what cluster.enabled requires; each prerequisite removed
// from it is refused with the field named, so a broken edit cannot start.
func TestReplicasConfigNeedsWhatClusterNeeds(t *testing.T) {
	r := loadReplicas(t)
	text := string(gatewayConfigOf(t, r.ms, r.pods))
	for _, tc := range []struct {
		name, field, value, want string // field: a key of gateway.yaml, set to value
	}{
		{"file store", "type", "file", "cluster.enabled"},
		{"no snapshots in PostgreSQL", "snapshot", `"/var/lib/gateway/sessions"`, "sessions.snapshot: postgres"},
		{"no KEK", "kek_file", `""`, "needs a key-encryption key"},
		{"no Connection IDs", "connection_id_length", "0", "connection_id_length"},
		{"replica id out of range", "replica_id", "256", "cluster.replica_id"},
		{"no lease", "lease", "0s", "cluster.lease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := regexp.MustCompile(`(?m)^(\s+` + tc.field + `:) .*$`)
			if n := len(key.FindAllString(text, -1)); n != 1 {
				t.Fatalf("the ConfigMap sets %s %d times, want once", tc.field, n)
			}
			_, err := config.Parse([]byte(key.ReplaceAllString(text, "${1} "+tc.value)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("with %s: %s: error %v, want one naming %s", tc.field, tc.value, err, tc.want)
			}
		})
	}
}

// goDuration reads `name = N * time.Second` from a Go source file of the
// gateway, so the manifests follow the code's bounds.
func goDuration(t *testing.T, file, name string) time.Duration {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:const\s+)?` + name + `\s*=\s*(\d+)\s*\*\s*time\.Second\b`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("%s: no `%s = N * time.Second`; the code changed, fix this test", file, name)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return time.Duration(n) * time.Second
}

// replicaIDOf is the replica id cluster.replica_id -1 takes from a host
// name: its trailing number (cmd/gateway/state.go replicaID), -1 if none
// or above 255.
func replicaIDOf(host string) int {
	i := strings.LastIndexFunc(host, func(r rune) bool { return r < '0' || r > '9' })
	n, err := strconv.Atoi(host[i+1:])
	if err != nil || n > 255 {
		return -1
	}
	return n
}

// TestReplicasStatefulSet: pods hardened like the base's, each pod's host
// name giving its ordinal as replica id, the link port declared, the DSN
// and POD_IP in the environment, probes (startup covering the store opens,
// readiness after the restore), a grace period above the handoff, and a
// rolling update that replaces one pod at a time and waits for it.
func TestReplicasStatefulSet(t *testing.T) {
	r := loadReplicas(t)
	pod, c, img := r.pods.Spec.Template.Spec, r.container(), loadDockerfile(t)

	n := r.pods.Spec.Replicas
	if n < 2 || n > 256 {
		t.Errorf("replicas %d: want 2..256 (one byte of replica id)", n)
	}
	if !selects(r.pods.Spec.Selector.MatchLabels, r.pods.Spec.Template.Metadata.Labels) {
		t.Errorf("selector %v does not match the pod labels %v", r.pods.Spec.Selector.MatchLabels, r.pods.Spec.Template.Metadata.Labels)
	}
	// Pod N's host name is "<name>-N" (at most 63 characters): replica N.
	for i := range n {
		host := fmt.Sprintf("%s-%d", r.name, i)
		if id := replicaIDOf(host); id != i || len(host) > 63 {
			t.Errorf("pod %s: replica id %d, want %d (a host name of at most 63 characters ending in the ordinal)", host, id, i)
		}
	}
	if len(r.set.Spec.VolumeClaimTemplates) != 0 {
		t.Error("volumeClaimTemplates: what outlives a pod lives in PostgreSQL; no volume to keep")
	}

	checkHardened(t, pod, img)
	checkResources(t, c)
	checkScrapeAnnotations(t, r.pods, c)
	checkEntrypointAndMounts(t, r.pods, r.ms, img)
	wantPorts := img.exposedSorted()
	if link := strconv.Itoa(r.linkPort(t)) + "/udp"; !slices.Contains(wantPorts, link) {
		wantPorts = append(wantPorts, link) // the image does not EXPOSE the link port
		slices.Sort(wantPorts)
	}
	if got := containerPorts(c); !slices.Equal(got, wantPorts) {
		t.Errorf("container ports %v, want the image's EXPOSE and the link: %v", got, wantPorts)
	}
	if e := r.env("GOMEMLIMIT"); e == nil || e.Value == "" {
		t.Error("GOMEMLIMIT: want the Go runtime's soft memory limit")
	}

	checkProbe(t, c, "startupProbe", c.StartupProbe, "/healthz")
	checkProbe(t, c, "readinessProbe", c.ReadinessProbe, "/readyz")
	checkProbe(t, c, "livenessProbe", c.LivenessProbe, "/healthz")
	// /healthz answers once serve has opened the key store and the state
	// store (each bounded by postgresOpenTimeout) and resolved the
	// backends; the startup probe must allow that before liveness counts.
	if p := c.StartupProbe; p != nil {
		open := goDuration(t, "../cmd/gateway/wiring.go", "postgresOpenTimeout")
		resolve := goDuration(t, "../cmd/gateway/check.go", "resolveTimeout")
		need := 2*open + time.Duration(len(r.cfg.Backends))*resolve
		if budget := time.Duration(p.InitialDelaySeconds+p.PeriodSeconds*p.FailureThreshold) * time.Second; budget < need {
			t.Errorf("startupProbe allows %v; serve may take %v before /healthz answers", budget, need)
		}
	}
	if p := c.LivenessProbe; p != nil && p.InitialDelaySeconds != 0 {
		t.Errorf("livenessProbe initialDelaySeconds %d: the startup probe holds it off", p.InitialDelaySeconds)
	}

	// SIGTERM: the handoff writes every snapshot within handoffTimeout;
	// the kubelet must not SIGKILL it half-way.
	handoff := goDuration(t, "../cmd/gateway/serve.go", "handoffTimeout")
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace < handoff+10*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v: want at least the handoff bound %v plus 10 s", grace, handoff)
	}

	ss := r.set.Spec
	if ss.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy %q: want Parallel (replicas start independently; updates stay one at a time)", ss.PodManagementPolicy)
	}
	ru := ss.UpdateStrategy.RollingUpdate
	if ss.UpdateStrategy.Type != "RollingUpdate" || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.num != 1 ||
		(ru.Partition != nil && *ru.Partition != 0) {
		t.Errorf("updateStrategy %+v: want RollingUpdate, maxUnavailable 1, every pod (partition 0)", ss.UpdateStrategy)
	}
	// Before the next pod leaves, the others must have read the restarted
	// one's new link address (every lease/3).
	if minReady, refresh := time.Duration(ss.MinReadySeconds)*time.Second, time.Duration(r.cfg.Cluster.Lease)/3; minReady < refresh {
		t.Errorf("minReadySeconds %v: below the replicas' refresh of each other's link address (lease/3 = %v)", minReady, refresh)
	}
}

// service is what the tests read of a Service.
type service struct {
	Spec struct {
		Type                  string            `yaml:"type"`
		ClusterIP             string            `yaml:"clusterIP"`
		ExternalTrafficPolicy string            `yaml:"externalTrafficPolicy"`
		Selector              map[string]string `yaml:"selector"`
		Ports                 []struct {
			Name       string  `yaml:"name"`
			Protocol   string  `yaml:"protocol"`
			Port       int     `yaml:"port"`
			TargetPort portRef `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

// TestReplicasServices: the devices' UDP Service reaches the DTLS port only,
// on the pods' own node with their real addresses; the headless Service the
// StatefulSet names lists the link port; both select the pods.
func TestReplicasServices(t *testing.T) {
	r := loadReplicas(t)
	c := r.container()
	link := r.linkPort(t)
	var devices, headless []string
	for _, m := range r.ms {
		if m.Kind != "Service" {
			continue
		}
		var s service
		m.decode(t, &s)
		if !selects(s.Spec.Selector, r.pods.Spec.Template.Metadata.Labels) {
			t.Errorf("%v: selector %v does not match the pod labels", m, s.Spec.Selector)
		}
		if s.Spec.ClusterIP == "None" {
			headless = append(headless, m.Metadata.Name)
			if m.Metadata.Name != r.set.Spec.ServiceName {
				t.Errorf("%v: headless, but the StatefulSet's serviceName is %q", m, r.set.Spec.ServiceName)
			}
			if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Protocol != "UDP" || c.containerPort(s.Spec.Ports[0].TargetPort, "UDP") != link {
				t.Errorf("%v: want one UDP port reaching the link's container port %d", m, link)
			}
			continue
		}
		devices = append(devices, m.Metadata.Name)
		if s.Spec.Type != "LoadBalancer" || s.Spec.ExternalTrafficPolicy != "Local" {
			t.Errorf("%v: type %q externalTrafficPolicy %q, want LoadBalancer and Local (devices' real addresses)",
				m, s.Spec.Type, s.Spec.ExternalTrafficPolicy)
		}
		if len(s.Spec.Ports) != 1 {
			t.Fatalf("%v: want exactly one port (5684/UDP), got %d", m, len(s.Spec.Ports))
		}
		p := s.Spec.Ports[0]
		if p.Protocol != "UDP" || p.Port != 5684 || c.containerPort(p.TargetPort, "UDP") != 5684 {
			t.Errorf("%v: port %s/%d -> %v, want UDP 5684 to the container's DTLS port", m, p.Protocol, p.Port, p.TargetPort)
		}
	}
	if len(devices) != 1 || len(headless) != 1 {
		t.Errorf("services: %v for devices, %v headless; want one of each", devices, headless)
	}
}

// TestReplicasPodDisruptionBudget: evictions take one replica at a time,
// like the rolling update and what the pods' memory is sized for (one
// peer's sessions taken over).
func TestReplicasPodDisruptionBudget(t *testing.T) {
	r := loadReplicas(t)
	var pdb struct {
		Spec struct {
			MinAvailable   *portRef `yaml:"minAvailable"`
			MaxUnavailable *portRef `yaml:"maxUnavailable"`
			Selector       struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
		} `yaml:"spec"`
	}
	one(t, r.ms, "PodDisruptionBudget").decode(t, &pdb)
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.num != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("pdb: want maxUnavailable: 1 and no minAvailable")
	}
	if !selects(pdb.Spec.Selector.MatchLabels, r.pods.Spec.Template.Metadata.Labels) {
		t.Errorf("pdb selector %v does not match the pod labels", pdb.Spec.Selector.MatchLabels)
	}
}

// TestReplicasSecretsHoldNoKeyMaterial: the committed Secrets are empty
// placeholders (the gateway refuses to start with an empty DSN or KEK), the
// DSN and the KEK live in different Secrets (both together give every PSK),
// and every Secret the pods refer to exists with the key they name.
func TestReplicasSecretsHoldNoKeyMaterial(t *testing.T) {
	r := loadReplicas(t)
	for _, m := range r.ms {
		if m.Kind != "Secret" {
			continue
		}
		var s struct {
			Type       string            `yaml:"type"`
			Data       map[string]string `yaml:"data"`
			StringData map[string]string `yaml:"stringData"`
		}
		m.decode(t, &s)
		if s.Type != "Opaque" || len(s.Data) != 0 || len(s.StringData) == 0 {
			t.Errorf("%v: type %q, %d data items, %d stringData items; want Opaque with stringData placeholders only",
				m, s.Type, len(s.Data), len(s.StringData))
		}
		for k, v := range s.StringData {
			if v != "" {
				t.Errorf("%v: %s holds a value; placeholders must be empty", m, k)
			}
		}
	}
	data := objectData(t, r.ms)
	dsn := r.env(r.cfg.Store.DSNEnv)
	if dsn == nil {
		t.Fatalf("no container variable %s", r.cfg.Store.DSNEnv)
	}
	if _, ok := data["Secret/"+dsn.Secret+"/"+dsn.Key]; !ok {
		t.Errorf("%s: Secret %s has no key %q", dsn.Name, dsn.Secret, dsn.Key)
	}
	img := loadDockerfile(t)
	files, _ := projectedFiles(t, r.pods, path.Dir(img.configPath))
	kek := files[r.cfg.Store.KEKFile]
	if kekSecret, _, _ := strings.Cut(strings.TrimPrefix(kek, "Secret/"), "/"); kekSecret == dsn.Secret {
		t.Errorf("the DSN and the KEK share the Secret %s; keep them apart", dsn.Secret)
	}
}

// TestReplicasSizing: GOMEMLIMIT and the memory limit hold twice the
// ConfigMap's limits.max_sessions at the measured cost of a session — a
// replica's own sessions plus those it takes over from one peer, which
// limits.max_sessions does not bound — and the request reserves it.
func TestReplicasSizing(t *testing.T) {
	s := benchSizing(t)
	r := loadReplicas(t)
	soft, hard, req := memoryBudget(t, r.container())
	held := 2 * r.cfg.Limits.MaxSessions
	s.check(t, "replicas (twice limits.max_sessions: its own and a peer's taken over)", held, soft, hard)
	if float64(req) < s.need(held) {
		t.Errorf("requests.memory %s is below what %d sessions take: a full node would evict the pod",
			r.container().Resources.Requests["memory"], held)
	}
	statesFigure(t, replicasDir+"/statefulset.yaml", s)
	statesFigure(t, replicasDir+"/configmap.yaml", s)
}
