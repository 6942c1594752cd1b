package deploy

import (
	"net"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/config"
	"gopkg.in/yaml.v3"
)

// objectData maps "kind/name/key" of every ConfigMap and Secret item to its
// content.
func objectData(t *testing.T, ms []manifest) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range ms {
		if m.Kind != "ConfigMap" && m.Kind != "Secret" {
			continue
		}
		var o struct {
			Data       map[string]string `yaml:"data"`
			StringData map[string]string `yaml:"stringData"`
		}
		m.decode(t, &o)
		for _, d := range []map[string]string{o.Data, o.StringData} {
			for k, v := range d {
				out[m.Kind+"/"+m.Metadata.Name+"/"+k] = v
			}
		}
	}
	return out
}

// TestService: one UDP port 5684 that reaches the container's UDP port, a
// selector matching the pods, and the client address kept.
func TestService(t *testing.T) {
	ms := loadManifests(t)
	d := loadDeployment(t, ms)
	var svc struct {
		Spec struct {
			Type                  string            `yaml:"type"`
			ExternalTrafficPolicy string            `yaml:"externalTrafficPolicy"`
			SessionAffinity       string            `yaml:"sessionAffinity"`
			Selector              map[string]string `yaml:"selector"`
			Ports                 []struct {
				Name       string  `yaml:"name"`
				Protocol   string  `yaml:"protocol"`
				Port       int     `yaml:"port"`
				TargetPort portRef `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	one(t, ms, "Service").decode(t, &svc)
	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("service: want exactly one port (5684/UDP), got %d", len(svc.Spec.Ports))
	}
	p := svc.Spec.Ports[0]
	if p.Protocol != "UDP" || p.Port != 5684 {
		t.Errorf("service port %s/%d, want UDP/5684", p.Protocol, p.Port)
	}
	if got := d.Spec.Template.Spec.Containers[0].containerPort(p.TargetPort, "UDP"); got != 5684 {
		t.Errorf("service targetPort %v is not the container's UDP port 5684 (resolved to %d)", p.TargetPort, got)
	}
	if !selects(svc.Spec.Selector, d.Spec.Template.Metadata.Labels) {
		t.Errorf("service selector %v does not match the pod labels %v", svc.Spec.Selector, d.Spec.Template.Metadata.Labels)
	}
	if svc.Spec.Type != "LoadBalancer" || svc.Spec.ExternalTrafficPolicy != "Local" {
		t.Errorf("service type %q externalTrafficPolicy %q, want LoadBalancer and Local (keeps device addresses)",
			svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
	}
	if svc.Spec.SessionAffinity != "ClientIP" {
		t.Errorf("service sessionAffinity %q, want ClientIP", svc.Spec.SessionAffinity)
	}
}

// gatewayConfig returns the gateway.yaml the Deployment mounts at the
// entrypoint's --config path.
func gatewayConfig(t *testing.T, ms []manifest) []byte {
	t.Helper()
	return gatewayConfigOf(t, ms, loadDeployment(t, ms))
}

// gatewayConfigOf returns the gateway.yaml the pods of d (a Deployment or a
// StatefulSet) mount at the entrypoint's --config path.
func gatewayConfigOf(t *testing.T, ms []manifest, d deployment) []byte {
	t.Helper()
	img := loadDockerfile(t)
	files, _ := projectedFiles(t, d, path.Dir(img.configPath))
	data, ok := objectData(t, ms)[files[path.Base(img.configPath)]]
	if !ok {
		t.Fatalf("no ConfigMap item for %s", img.configPath)
	}
	return []byte(data)
}

// TestConfigMap: the mounted gateway.yaml passes config.Parse, listens on
// the container's UDP port, serves the admin endpoints on the probes' TCP
// port on every pod address, caps sessions within the memory limit, drains
// within the grace period, and finds its key file, tag secret and KEK (if
// any) in the same projected volume.
func TestConfigMap(t *testing.T) {
	ms := loadManifests(t)
	d := loadDeployment(t, ms)
	img := loadDockerfile(t)
	cfg, err := config.Parse(gatewayConfig(t, ms))
	if err != nil {
		t.Fatalf("ConfigMap gateway.yaml: %v", err)
	}
	checkListenersAndAdmin(t, cfg, d.Spec.Template.Spec.Containers[0])
	if grace := time.Duration(d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second; time.Duration(cfg.Sessions.DrainTimeout) >= grace {
		t.Errorf("sessions.drain_timeout %v is not below terminationGracePeriodSeconds %v", time.Duration(cfg.Sessions.DrainTimeout), grace)
	}
	if cfg.Store.Type != config.StoreFile {
		t.Errorf("store.type %q, want file", cfg.Store.Type)
	}
	files, _ := projectedFiles(t, d, path.Dir(img.configPath))
	secretFiles := map[string]string{"store.path": cfg.Store.Path, "store.tag_key_file": cfg.Store.TagKeyFile}
	if cfg.Store.KEKFile != "" {
		secretFiles["store.kek_file"] = cfg.Store.KEKFile
	}
	checkSecretFiles(t, files, secretFiles)
}

// checkListenersAndAdmin: every listener is a UDP port of container c, and
// the admin listener serves the probes' TCP port on every pod address.
func checkListenersAndAdmin(t *testing.T, cfg *config.Config, c container) {
	t.Helper()
	for _, l := range cfg.Listeners {
		_, port, err := net.SplitHostPort(l.Address)
		n, err2 := strconv.Atoi(port)
		if err != nil || err2 != nil || c.containerPort(portRef{num: n}, "UDP") < 0 {
			t.Errorf("listener %s: no UDP container port %s", l.Address, port)
		}
	}
	host, port, err := net.SplitHostPort(cfg.Admin.Address)
	if n, err2 := strconv.Atoi(port); err != nil || err2 != nil || n != adminPort || c.containerPort(portRef{num: n}, "TCP") != adminPort {
		t.Errorf("admin.address %q: want the TCP container port %d of the probes", cfg.Admin.Address, adminPort)
	}
	if host != "" && host != "0.0.0.0" && host != "::" {
		t.Errorf("admin.address %q: the kubelet and Prometheus reach the pod address, not %s", cfg.Admin.Address, host)
	}
}

// checkSecretFiles: each configured file (field -> path as written) is a
// file name next to gateway.yaml that a Secret projects.
func checkSecretFiles(t *testing.T, projected, secretFiles map[string]string) {
	t.Helper()
	for field, p := range secretFiles {
		if p == "" || path.IsAbs(p) || strings.Contains(p, "/") {
			t.Errorf("%s %q: want a file name next to gateway.yaml", field, p)
			continue
		}
		if src := projected[p]; !strings.HasPrefix(src, "Secret/") {
			t.Errorf("%s %q comes from %q, want a Secret in the projected volume", field, p, src)
		}
	}
}

// TestSecretHoldsNoKeys: the committed Secret is a placeholder. Its key
// store is a valid empty one and its tag secret is empty, so no real or
// publicly known secret can be deployed from this repository.
func TestSecretHoldsNoKeys(t *testing.T) {
	ms := loadManifests(t)
	sec := one(t, ms, "Secret")
	var s struct {
		Type       string            `yaml:"type"`
		Data       map[string]string `yaml:"data"`
		StringData map[string]string `yaml:"stringData"`
	}
	sec.decode(t, &s)
	if s.Type != "Opaque" || len(s.Data) != 0 {
		t.Errorf("secret: type %q and %d data items; want Opaque with stringData placeholders only", s.Type, len(s.Data))
	}
	keys, ok := s.StringData["keys.yaml"]
	if !ok {
		t.Fatal("secret: no keys.yaml")
	}
	var store struct {
		Keys *[]yaml.Node `yaml:"keys"`
	}
	if err := yaml.Unmarshal([]byte(keys), &store); err != nil || store.Keys == nil || len(*store.Keys) != 0 {
		t.Errorf("secret keys.yaml must be the empty store \"keys: []\" (err %v)", err)
	}
	for name, v := range s.StringData {
		if name != "keys.yaml" && v != "" {
			t.Errorf("secret %s holds a value; placeholders must be empty", name)
		}
	}
}
