package deploy

import (
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
)

type deployment struct {
	Spec struct {
		Replicas int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	AutomountServiceAccountToken  *bool `yaml:"automountServiceAccountToken"`
	HostNetwork                   bool  `yaml:"hostNetwork"`
	TerminationGracePeriodSeconds int   `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
		RunAsUser    *int  `yaml:"runAsUser"`
		RunAsGroup   *int  `yaml:"runAsGroup"`
		FSGroup      *int  `yaml:"fsGroup"`
		// SeccompProfile.Type: "RuntimeDefault".
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []volume    `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Privileged               *bool `yaml:"privileged"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	StartupProbe   *probe `yaml:"startupProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string  `yaml:"path"`
		Port portRef `yaml:"port"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

type volume struct {
	Name      string `yaml:"name"`
	Projected *struct {
		DefaultMode *int `yaml:"defaultMode"`
		Sources     []struct {
			ConfigMap *source `yaml:"configMap"`
			Secret    *source `yaml:"secret"`
		} `yaml:"sources"`
	} `yaml:"projected"`
}

type source struct {
	Name  string `yaml:"name"`
	Items []struct {
		Key  string `yaml:"key"`
		Path string `yaml:"path"`
		Mode *int   `yaml:"mode"`
	} `yaml:"items"`
}

// adminPort is the TCP port of the admin listener (admin.address in the
// ConfigMap): probes, metrics.
const adminPort = 9090

func loadDeployment(t *testing.T, ms []manifest) deployment {
	t.Helper()
	var d deployment
	one(t, ms, "Deployment").decode(t, &d)
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("deployment: want one container, got %d", len(d.Spec.Template.Spec.Containers))
	}
	return d
}

// containerPort resolves a probe or Service port (number or name) to the
// container port it designates, or -1.
func (c container) containerPort(p portRef, protocol string) int {
	for _, cp := range c.Ports {
		proto := cp.Protocol
		if proto == "" {
			proto = "TCP"
		}
		if proto == protocol && ((p.name != "" && cp.Name == p.name) || (p.name == "" && cp.ContainerPort == p.num)) {
			return cp.ContainerPort
		}
	}
	return -1
}

// projectedFiles maps each file of the projected volume mounted at dir to
// "kind/name/key" of its source.
func projectedFiles(t *testing.T, d deployment, dir string) (files map[string]string, defaultMode *int) {
	t.Helper()
	pod := d.Spec.Template.Spec
	var volName string
	for _, vm := range pod.Containers[0].VolumeMounts {
		if vm.MountPath == dir {
			volName = vm.Name
		}
	}
	for _, v := range pod.Volumes {
		if v.Name != volName || v.Projected == nil {
			continue
		}
		files = map[string]string{}
		for _, s := range v.Projected.Sources {
			for kind, src := range map[string]*source{"ConfigMap": s.ConfigMap, "Secret": s.Secret} {
				if src == nil {
					continue
				}
				for _, it := range src.Items {
					files[it.Path] = kind + "/" + src.Name + "/" + it.Key
				}
			}
		}
		return files, v.Projected.DefaultMode
	}
	t.Fatalf("deployment: no projected volume mounted at %s", dir)
	return nil, nil
}

// TestDeployment: two replicas, non-root with the image's user, read-only
// root, no capabilities, resources, probes and Prometheus scrape annotations
// on an existing TCP port, and /etc/gateway as the one read-only mount the
// image's entrypoint expects.
func TestDeployment(t *testing.T) {
	ms := loadManifests(t)
	d := loadDeployment(t, ms)
	c := d.Spec.Template.Spec.Containers[0]
	img := loadDockerfile(t)

	if d.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", d.Spec.Replicas)
	}
	if !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) {
		t.Errorf("selector %v does not match the pod labels %v", d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels)
	}
	checkHardened(t, d.Spec.Template.Spec, img)
	checkResources(t, c)

	// Ports: the image's EXPOSEd ports, nothing else.
	if got, want := containerPorts(c), img.exposedSorted(); !slices.Equal(got, want) {
		t.Errorf("container ports %v, want the image's EXPOSE %v", got, want)
	}
	checkProbe(t, c, "readinessProbe", c.ReadinessProbe, "/readyz")
	checkProbe(t, c, "livenessProbe", c.LivenessProbe, "/healthz")
	checkScrapeAnnotations(t, d, c)
	checkEntrypointAndMounts(t, d, ms, img)
}

// checkHardened: non-root with the image's user and group (fsGroup too, so
// projected secrets are readable), the runtime's seccomp profile,
// read-only root, no privilege escalation, no capabilities, no host
// network, no service-account token.
func checkHardened(t *testing.T, pod podSpec, img image) {
	t.Helper()
	c := pod.Containers[0]
	isTrue := func(b *bool) bool { return b != nil && *b }
	if !isTrue(pod.SecurityContext.RunAsNonRoot) || !isTrue(c.SecurityContext.RunAsNonRoot) {
		t.Error("runAsNonRoot must be true for the pod and the container")
	}
	if u := pod.SecurityContext.RunAsUser; u == nil || *u != img.uid || *u == 0 {
		t.Errorf("runAsUser %v, want the image's user %d", u, img.uid)
	}
	if g := pod.SecurityContext.FSGroup; g == nil || *g != img.gid {
		t.Errorf("fsGroup %v, want %d so the projected secrets are readable", g, img.gid)
	}
	if p := pod.SecurityContext.SeccompProfile.Type; p != "RuntimeDefault" {
		t.Errorf("seccompProfile.type %q, want RuntimeDefault", p)
	}
	if !isTrue(c.SecurityContext.ReadOnlyRootFilesystem) {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if isTrue(c.SecurityContext.Privileged) || pod.HostNetwork {
		t.Error("no privileged container, no host network")
	}
	if !slices.Equal(c.SecurityContext.Capabilities.Drop, []string{"ALL"}) || len(c.SecurityContext.Capabilities.Add) != 0 {
		t.Errorf("capabilities: drop %v add %v, want drop [ALL] and nothing added",
			c.SecurityContext.Capabilities.Drop, c.SecurityContext.Capabilities.Add)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken must be false: the gateway never calls the API")
	}
}

// checkResources: requests and limits for cpu and memory, request <= limit.
func checkResources(t *testing.T, c container) {
	t.Helper()
	for _, r := range []string{"cpu", "memory"} {
		req, err1 := quantity(c.Resources.Requests[r])
		lim, err2 := quantity(c.Resources.Limits[r])
		if err1 != nil || err2 != nil {
			t.Errorf("resources %s: request %q, limit %q: both required", r, c.Resources.Requests[r], c.Resources.Limits[r])
			continue
		}
		if req > lim {
			t.Errorf("resources %s: request %s above limit %s", r, c.Resources.Requests[r], c.Resources.Limits[r])
		}
	}
}

// containerPorts lists c's ports as "5684/udp", sorted.
func containerPorts(c container) []string {
	var ports []string
	for _, p := range c.Ports {
		ports = append(ports, strconv.Itoa(p.ContainerPort)+"/"+strings.ToLower(p.Protocol))
	}
	slices.Sort(ports)
	return ports
}

// checkProbe: an HTTP probe of path on the admin listener's TCP container
// port.
func checkProbe(t *testing.T, c container, name string, p *probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: want an httpGet probe", name)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: path %q, want %q", name, p.HTTPGet.Path, path)
	}
	if port := c.containerPort(p.HTTPGet.Port, "TCP"); port != adminPort {
		t.Errorf("%s: port %v is not the TCP container port %d (resolved to %d)", name, p.HTTPGet.Port, adminPort, port)
	}
}

// checkScrapeAnnotations: Prometheus scrape annotations naming the admin
// port and path.
func checkScrapeAnnotations(t *testing.T, d deployment, c container) {
	t.Helper()
	ann := d.Spec.Template.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod annotations %v: want prometheus.io/scrape \"true\" and prometheus.io/path /metrics", ann)
	}
	if n, err := strconv.Atoi(ann["prometheus.io/port"]); err != nil || n != adminPort || c.containerPort(portRef{num: n}, "TCP") != adminPort {
		t.Errorf("prometheus.io/port %q: want the TCP container port %d", ann["prometheus.io/port"], adminPort)
	}
}

// checkEntrypointAndMounts: the image's entrypoint alone starts the
// gateway; every mount is read-only without subPath (it would never see
// Secret updates, R10); the directory of the entrypoint's --config is a
// projected volume with mode 0400 whose gateway.yaml comes from a
// ConfigMap and whose every item names an object and key that exist.
func checkEntrypointAndMounts(t *testing.T, d deployment, ms []manifest, img image) {
	t.Helper()
	c := d.Spec.Template.Spec.Containers[0]
	if len(c.Command) != 0 || len(c.Args) != 0 {
		t.Errorf("command %v args %v: the image's ENTRYPOINT must be used as is", c.Command, c.Args)
	}
	confDir := path.Dir(img.configPath)
	found := false
	for _, vm := range c.VolumeMounts {
		if !vm.ReadOnly || vm.SubPath != "" {
			t.Errorf("volume mount %s: want readOnly and no subPath", vm.MountPath)
		}
		found = found || vm.MountPath == confDir
	}
	if !found {
		t.Fatalf("no volume mounted at %s, the directory of the entrypoint's --config %s", confDir, img.configPath)
	}
	files, mode := projectedFiles(t, d, confDir)
	if mode == nil || *mode != 0o400 {
		t.Errorf("projected volume defaultMode %v, want 0400 (256)", mode)
	}
	if src := files[path.Base(img.configPath)]; !strings.HasPrefix(src, "ConfigMap/") {
		t.Errorf("%s comes from %q, want a ConfigMap", img.configPath, src)
	}
	data := objectData(t, ms)
	for file, src := range files {
		if _, ok := data[src]; !ok {
			t.Errorf("projected %s: %s does not exist in the manifests", file, src)
		}
	}
}
