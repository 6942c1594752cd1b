package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// kubeDir holds the Kubernetes base.
const kubeDir = "kubernetes"

// manifest is one YAML document of a file under kubeDir.
type manifest struct {
	file string
	node *yaml.Node
	object
}

type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
}

func (m manifest) String() string { return fmt.Sprintf("%s: %s/%s", m.file, m.Kind, m.Metadata.Name) }

// decode decodes the whole document into v.
func (m manifest) decode(t *testing.T, v any) {
	t.Helper()
	if err := m.node.Decode(v); err != nil {
		t.Fatalf("%v: %v", m, err)
	}
}

// portRef is an IntOrString port: a number or the name of a container port.
type portRef struct {
	num  int
	name string
}

func (p *portRef) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: port must be a number or a name", n.Line)
	}
	if n.Tag == "!!int" {
		v, err := strconv.Atoi(n.Value)
		p.num = v
		return err
	}
	p.name = n.Value
	return nil
}

func (p portRef) String() string {
	if p.name != "" {
		return p.name
	}
	return strconv.Itoa(p.num)
}

// kubeFilesIn lists the YAML files of dir (not of its subdirectories).
func kubeFilesIn(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	slices.Sort(files)
	if len(files) == 0 {
		t.Fatalf("no YAML files in %s", dir)
	}
	return files
}

// loadManifests parses every document of every YAML file under kubeDir,
// the kustomization included.
func loadManifests(t *testing.T) []manifest {
	t.Helper()
	return loadManifestsIn(t, kubeDir)
}

// loadManifestsIn parses every document of every YAML file of dir.
func loadManifestsIn(t *testing.T, dir string) []manifest {
	t.Helper()
	var out []manifest
	for _, file := range kubeFilesIn(t, dir) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			var doc yaml.Node
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", file, i, err)
			}
			if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
				t.Fatalf("%s: document %d is not a mapping", file, i)
			}
			m := manifest{file: filepath.Base(file), node: &doc}
			m.decode(t, &m.object)
			out = append(out, m)
		}
	}
	return out
}

// one returns the single manifest of kind, failing if there is not exactly one.
func one(t *testing.T, ms []manifest, kind string) manifest {
	t.Helper()
	var found []manifest
	for _, m := range ms {
		if m.Kind == kind {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s, found %d: %v", kind, len(found), found)
	}
	return found[0]
}

// apiVersions is the API version of each kind the manifests may use.
var apiVersions = map[string]string{
	"Kustomization":       "kustomize.config.k8s.io/v1beta1",
	"Deployment":          "apps/v1",
	"StatefulSet":         "apps/v1",
	"Service":             "v1",
	"ConfigMap":           "v1",
	"Secret":              "v1",
	"PodDisruptionBudget": "policy/v1",
}

// TestManifestsWellFormed: every document names its apiVersion, kind and
// name, with the API version of its kind, and no two share kind and name.
func TestManifestsWellFormed(t *testing.T) {
	checkWellFormed(t, loadManifests(t), map[string]int{
		"Kustomization": 1, "Deployment": 1, "Service": 1, "ConfigMap": 1, "Secret": 1, "PodDisruptionBudget": 1,
	})
}

// checkWellFormed checks every document of a directory as
// TestManifestsWellFormed says, and that it holds exactly count documents
// of each kind (and no other kind).
func checkWellFormed(t *testing.T, ms []manifest, count map[string]int) {
	t.Helper()
	seen := map[string]string{}
	kinds := map[string]int{}
	for _, m := range ms {
		kinds[m.Kind]++
		if m.APIVersion == "" || m.Kind == "" {
			t.Errorf("%v: apiVersion and kind are required", m)
			continue
		}
		if want, ok := apiVersions[m.Kind]; !ok || count[m.Kind] == 0 {
			t.Errorf("%v: unexpected kind (add it to this test)", m)
		} else if m.APIVersion != want {
			t.Errorf("%v: apiVersion %q, want %q", m, m.APIVersion, want)
		}
		if m.Kind == "Kustomization" {
			if m.file != "kustomization.yaml" {
				t.Errorf("%v: the kustomization must be kustomization.yaml", m)
			}
			continue
		}
		if m.Metadata.Name == "" {
			t.Errorf("%v: metadata.name is required", m)
		}
		key := m.Kind + "/" + m.Metadata.Name
		if prev, dup := seen[key]; dup {
			t.Errorf("%v: %s already defined in %s", m, key, prev)
		}
		seen[key] = m.file
	}
	for kind, n := range count {
		if kinds[kind] != n {
			t.Errorf("want %d %s, found %d", n, kind, kinds[kind])
		}
	}
}

// TestKustomizationListsEveryFile: the kustomization's resources are
// exactly the other YAML files of the directory.
func TestKustomizationListsEveryFile(t *testing.T) {
	checkKustomizationListsEveryFile(t, kubeDir)
}

// checkKustomizationListsEveryFile fails unless the resources of dir's
// kustomization are exactly the other YAML files of dir, each once.
func checkKustomizationListsEveryFile(t *testing.T, dir string) {
	t.Helper()
	var k struct {
		Resources []string `yaml:"resources"`
	}
	one(t, loadManifestsIn(t, dir), "Kustomization").decode(t, &k)
	var want []string
	for _, f := range kubeFilesIn(t, dir) {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			want = append(want, base)
		}
	}
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s: kustomization resources %v, want every manifest file %v", dir, got, want)
	}
	if len(slices.Compact(got)) != len(k.Resources) {
		t.Errorf("%s: kustomization lists a resource twice: %v", dir, k.Resources)
	}
}

// selects reports whether a non-empty selector matches labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestPodDisruptionBudget: minAvailable 1, below the replica count, and a
// selector that matches the Deployment's pods.
func TestPodDisruptionBudget(t *testing.T) {
	ms := loadManifests(t)
	d := loadDeployment(t, ms)
	var pdb struct {
		Spec struct {
			MinAvailable   *portRef `yaml:"minAvailable"`
			MaxUnavailable *portRef `yaml:"maxUnavailable"`
			Selector       struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
		} `yaml:"spec"`
	}
	one(t, ms, "PodDisruptionBudget").decode(t, &pdb)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.num != 1 || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("pdb: want minAvailable: 1 and no maxUnavailable")
	}
	if pdb.Spec.MinAvailable != nil && pdb.Spec.MinAvailable.num >= d.Spec.Replicas {
		t.Errorf("pdb: minAvailable %v blocks every eviction with %d replicas", pdb.Spec.MinAvailable, d.Spec.Replicas)
	}
	if !selects(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) {
		t.Errorf("pdb selector %v does not match the pod labels %v", pdb.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels)
	}
}

// quantity parses the Kubernetes quantities used here (cpu "500m" or "2",
// memory "640Mi", "1Gi", "1G") into milli-units or bytes.
func quantity(s string) (int64, error) {
	suffixes := []struct {
		suffix string
		mult   float64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
		{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"m", 1e-3},
	}
	mult := 1.0
	for _, sf := range suffixes {
		if strings.HasSuffix(s, sf.suffix) {
			s, mult = strings.TrimSuffix(s, sf.suffix), sf.mult
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad quantity %q", s)
	}
	return int64(v * mult * 1000), nil
}
