package deploy

import (
	"bufio"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// image is what the tests need to know about deploy/Dockerfile.
type image struct {
	from       []string // FROM references, in order
	uid, gid   int      // USER of the final stage
	exposed    []string // EXPOSE, "5684/udp"
	entrypoint []string
	configPath string   // the value of --config in the entrypoint
	build      []string // the arguments of the builder's `go build`
}

func (img image) exposedSorted() []string {
	out := slices.Clone(img.exposed)
	slices.Sort(out)
	return out
}

// goBuild matches the build command shared by the Dockerfile and
// build-static.sh: "CGO_ENABLED=0 go build ARGS".
var goBuild = regexp.MustCompile(`(?m)^(?:RUN\s+)?CGO_ENABLED=0 go build (.+)$`)

// buildArgs splits the arguments of the go build line of text, with the
// output path (the value of -o) replaced by OUT.
func buildArgs(t *testing.T, file, text string) []string {
	t.Helper()
	m := goBuild.FindAllStringSubmatch(text, -1)
	if len(m) != 1 {
		t.Fatalf("%s: want exactly one line \"CGO_ENABLED=0 go build …\", found %d", file, len(m))
	}
	var args []string
	// A small shell-word splitter: double quotes group, nothing else is special.
	var cur strings.Builder
	inQuote, started := false, false
	for _, r := range m[0][1] {
		switch {
		case r == '"':
			inQuote, started = !inQuote, true
		case (r == ' ' || r == '\t') && !inQuote:
			if started {
				args = append(args, cur.String())
				cur.Reset()
				started = false
			}
		default:
			cur.WriteRune(r)
			started = true
		}
	}
	if started {
		args = append(args, cur.String())
	}
	for i, a := range args {
		if a == "-o" && i+1 < len(args) {
			args[i+1] = "OUT/gateway"
		}
	}
	return args
}

func loadDockerfile(t *testing.T) image {
	t.Helper()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	img := image{uid: -1, gid: -1}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			img.from = append(img.from, strings.Fields(rest)[0])
		case "USER":
			u, g, _ := strings.Cut(rest, ":")
			img.uid, _ = strconv.Atoi(u)
			img.gid, _ = strconv.Atoi(g)
		case "EXPOSE":
			img.exposed = append(img.exposed, strings.Fields(rest)...)
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &img.entrypoint); err != nil {
				t.Fatalf("Dockerfile: ENTRYPOINT must be exec form (JSON): %v", err)
			}
		}
	}
	for i, a := range img.entrypoint {
		if a == "--config" && i+1 < len(img.entrypoint) {
			img.configPath = img.entrypoint[i+1]
		}
	}
	img.build = buildArgs(t, "Dockerfile", string(data))
	return img
}

// TestDockerfile: pinned builder, distroless final stage, non-root user,
// the two ports, the serve entrypoint on /etc/gateway/gateway.yaml.
func TestDockerfile(t *testing.T) {
	img := loadDockerfile(t)
	want := []string{"golang:1.26", "gcr.io/distroless/static-debian12:nonroot"}
	if len(img.from) != 2 {
		t.Fatalf("FROM %v, want the stages %v", img.from, want)
	}
	for i, w := range want {
		// A digest may be appended to the pinned tag.
		if img.from[i] != w && !strings.HasPrefix(img.from[i], w+"@sha256:") {
			t.Errorf("stage %d: FROM %s, want %s", i, img.from[i], w)
		}
	}
	if img.uid != 65532 || img.gid != 65532 {
		t.Errorf("USER %d:%d, want 65532:65532 (distroless nonroot)", img.uid, img.gid)
	}
	if got, want := img.exposedSorted(), []string{"5684/udp", "9090/tcp"}; !slices.Equal(got, want) {
		t.Errorf("EXPOSE %v, want %v", got, want)
	}
	if want := []string{"/gateway", "serve", "--config", "/etc/gateway/gateway.yaml"}; !slices.Equal(img.entrypoint, want) {
		t.Errorf("ENTRYPOINT %q, want %q", img.entrypoint, want)
	}
	for _, flag := range []string{"-trimpath", "./cmd/gateway"} {
		if !slices.Contains(img.build, flag) {
			t.Errorf("go build %q lacks %q", img.build, flag)
		}
	}
	// Stripped, and stamped with the VERSION and COMMIT build arguments.
	if i := slices.Index(img.build, "-ldflags"); i < 0 || i+1 >= len(img.build) ||
		!strings.HasPrefix(img.build[i+1], "-s -w ") || !strings.Contains(img.build[i+1], "-X main.version=${VERSION}") ||
		!strings.Contains(img.build[i+1], "-X main.commit=${COMMIT}") {
		t.Errorf("go build %q: want -ldflags \"-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}\"", img.build)
	}
}

// TestDockerfileMatchesBuildScript: build-static.sh, which CI runs, builds
// with exactly the image's command; only the output directory differs.
func TestDockerfileMatchesBuildScript(t *testing.T) {
	img := loadDockerfile(t)
	script, err := os.ReadFile("build-static.sh")
	if err != nil {
		t.Fatal(err)
	}
	got := buildArgs(t, "build-static.sh", string(script))
	if !slices.Equal(got, img.build) {
		t.Errorf("build-static.sh builds with\n  %q\nthe Dockerfile with\n  %q", got, img.build)
	}
	for _, file := range []string{"Dockerfile", "build-static.sh"} {
		data, _ := os.ReadFile(file)
		if !strings.Contains(string(data), "GOTOOLCHAIN=local") {
			t.Errorf("%s: want GOTOOLCHAIN=local, so both use the installed Go", file)
		}
	}
}
