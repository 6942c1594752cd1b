package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestBuildStaticBinary builds the gateway with build-static.sh (the image's
// exact build command), checks that the result is a static ELF executable,
// and runs its check-config on the Kubernetes ConfigMap's gateway.yaml with
// a freshly generated key store: with an empty environment, and, as root,
// chrooted into a directory that holds only the binary, /etc/passwd and
// /etc/gateway, as UID/GID 65532 — what the distroless image provides.
func TestBuildStaticBinary(t *testing.T) {
	bin := staticBinary(t)

	t.Run("static ELF", func(t *testing.T) { checkStaticELF(t, bin) })

	t.Run("version stamped by the build arguments", func(t *testing.T) {
		stdout, stderr, err := run(t, exec.Command(bin, "version"))
		if want := "gateway " + stampVersion + ", commit " + stampCommit + ","; err != nil || !strings.HasPrefix(stdout, want) {
			t.Fatalf("gateway version: %q, %v (stderr %q), want it to start with %q", stdout, err, stderr, want)
		}
	})

	// The ConfigMap's configuration, its backend on loopback: check-config
	// and serve resolve backend hosts, and tests query no DNS server.
	cfg := bytes.ReplaceAll(gatewayConfig(t, loadManifests(t)), []byte("lwm2m-dm.lwm2m.svc.cluster.local"), []byte("127.0.0.1"))
	t.Run("check-config with empty environment", func(t *testing.T) {
		dir := t.TempDir()
		writeGatewayDir(t, dir, cfg, -1)
		stdout, stderr, err := run(t, exec.Command(bin, "check-config", filepath.Join(dir, "gateway.yaml")))
		if err != nil {
			t.Fatalf("check-config: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
		}
		if !strings.Contains(stdout, ": ok (1 listeners, 1 backends, file store with 1 keys, 1 warnings)") ||
			!strings.Contains(stdout, "warning: psk store: keys are stored in plaintext") {
			t.Errorf("check-config output %q", stdout)
		}
	})

	t.Run("check-config refuses a short key without showing it", func(t *testing.T) {
		dir := t.TempDir()
		writeGatewayDir(t, dir, cfg, -1)
		short := randomHex(t, 15)
		writeFile(t, filepath.Join(dir, "keys.yaml"), keyFile(short), 0o600, -1)
		stdout, stderr, err := run(t, exec.Command(bin, "check-config", filepath.Join(dir, "gateway.yaml")))
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("check-config of a 15-byte key: %v, want exit status 1\nstdout: %s\nstderr: %s", err, stdout, stderr)
		}
		if !strings.Contains(stderr, "R1") {
			t.Errorf("error does not name rule R1: %s", stderr)
		}
		if strings.Contains(stdout+stderr, short) || strings.Contains(stdout+stderr, "device-0001") {
			t.Errorf("output shows the key or the raw identity (R9): %s%s", stdout, stderr)
		}
	})

	t.Run("check-config chrooted as 65532", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Log("not root: the chroot check needs root and runs in CI, which runs as root")
			return
		}
		root := filepath.Join(t.TempDir(), "root")
		for _, d := range []string{root, filepath.Join(root, "etc"), filepath.Join(root, "etc", "gateway")} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, "gateway"), string(data), 0o755, -1)
		// The entries distroless/static provides.
		writeFile(t, filepath.Join(root, "etc", "passwd"),
			"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n", 0o644, -1)
		writeFile(t, filepath.Join(root, "etc", "group"), "root:x:0:\nnonroot:x:65532:\n", 0o644, -1)
		writeGatewayDir(t, filepath.Join(root, "etc", "gateway"), cfg, 65532)

		cmd := exec.Command("/gateway", "check-config", "/etc/gateway/gateway.yaml")
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Chroot:     root,
			Credential: &syscall.Credential{Uid: 65532, Gid: 65532},
		}
		stdout, stderr, err := run(t, cmd)
		if err != nil {
			t.Fatalf("chrooted check-config: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
		}
		if !strings.Contains(stdout, "/etc/gateway/gateway.yaml: ok (1 listeners, 1 backends, file store with 1 keys, 1 warnings)") {
			t.Errorf("chrooted check-config output %q", stdout)
		}
	})

	t.Run("serves a DTLS session chrooted as 65532", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Log("not root: the chroot check needs root and runs in CI, which runs as root")
			return
		}
		serveChrooted(t, bin)
	})
}

// built is the gateway binary build-static.sh made for this test binary,
// once, in a directory TestMain removes.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// stampVersion and stampCommit are what the test build passes as the
// Dockerfile's VERSION and COMMIT build arguments.
const stampVersion, stampCommit = "v0.0.0-deploytest", "0123abc"

// staticBinary builds the gateway with build-static.sh (the image's exact
// build command) on first use and returns its path; it skips t in -short
// mode.
func staticBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the gateway binary; not in -short mode")
	}
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "deploy-gateway-"); built.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "build-static.sh", built.dir)
		cmd.Env = append(os.Environ(), "VERSION="+stampVersion, "COMMIT="+stampCommit)
		if msg, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("build-static.sh: %v\n%s", err, msg)
			return
		}
		built.bin = filepath.Join(built.dir, "gateway")
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// serveChrooted runs `gateway serve` in an empty root holding only the
// binary, /etc/passwd, /etc/group and /etc/gateway, as UID 65532 (what the
// distroless image provides), and has a simulated device register through it.
func serveChrooted(t *testing.T, bin string) {
	backend, err := devsim.NewBackend("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{root, filepath.Join(root, "etc"), filepath.Join(root, "etc", "gateway")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "gateway"), string(data), 0o755, -1)
	writeFile(t, filepath.Join(root, "etc", "passwd"),
		"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n", 0o644, -1)
	writeFile(t, filepath.Join(root, "etc", "group"), "root:x:0:\nnonroot:x:65532:\n", 0o644, -1)
	cfg := fmt.Sprintf("listeners: [{address: \"127.0.0.1:0\"}]\nbackends: {dm: {address: %q}}\nstore: {path: keys.yaml, tag_key_file: tag.key}\nadmin: {address: \"\"}\n", backend.Addr())
	dir := filepath.Join(root, "etc", "gateway")
	writeGatewayDir(t, dir, []byte(cfg), 65532)
	keyHex := randomHex(t, 32)
	writeFile(t, filepath.Join(dir, "keys.yaml"), keyFile(keyHex), 0o400, 65532)

	cmd := exec.Command("/gateway", "serve", "--config", "/etc/gateway/gateway.yaml")
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: 65532, Gid: 65532}}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "listening" {
				addr <- fmt.Sprint(line["addr"])
			}
		}
	}()
	var gw string
	select {
	case gw = <-addr:
	case <-time.After(10 * time.Second):
		t.Fatal("chrooted gateway did not start listening")
	}
	key, _ := hex.DecodeString(keyHex)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	d, err := devsim.Dial(ctx, devsim.DeviceConfig{Server: gw, Identity: []byte("device-0001"), Key: key, Endpoint: "urn:dev:0001"})
	if err != nil {
		t.Fatalf("handshake with the chrooted gateway: %v", err)
	}
	defer d.Close()
	if _, err := d.Register(ctx); err != nil {
		t.Fatalf("register through the chrooted gateway: %v", err)
	}
	if _, err := backend.WaitRegistration(ctx, "urn:dev:0001"); err != nil {
		t.Fatal(err)
	}
}

// checkStaticELF fails unless bin is an ELF executable without a program
// interpreter (PT_INTERP) and without shared-library dependencies (DT_NEEDED).
func checkStaticELF(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("not an ELF file: %v", err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		t.Errorf("ELF type %v, want ET_EXEC (a static, non-PIE executable)", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("has a PT_INTERP program header: dynamically linked")
		}
	}
	libs, err := f.ImportedLibraries() // the DT_NEEDED entries
	if err != nil {
		t.Fatalf("reading DT_NEEDED: %v", err)
	}
	if len(libs) != 0 {
		t.Errorf("needs shared libraries %v", libs)
	}
}

// run runs cmd with an empty environment (Env nil would inherit the test's)
// from the root directory, with a timeout, and returns its output.
func run(t *testing.T, cmd *exec.Cmd) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	cmd.Env = []string{}
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return "", "", err
	}
	timer := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	err = cmd.Wait()
	return o.String(), e.String(), err
}

// writeGatewayDir writes what the projected volume holds into dir:
// gateway.yaml (the ConfigMap's), keys.yaml with one identity and 32 random
// bytes, and tag.key; the secrets mode 0400, owned by uid unless uid < 0.
func writeGatewayDir(t *testing.T, dir string, cfg []byte, uid int) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "gateway.yaml"), string(cfg), 0o444, -1)
	writeFile(t, filepath.Join(dir, "keys.yaml"), keyFile(randomHex(t, 32)), 0o400, uid)
	tag := make([]byte, 32)
	if _, err := rand.Read(tag); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "tag.key"), base64.StdEncoding.EncodeToString(tag)+"\n", 0o400, uid)
}

// keyFile is a key store (README.md "Key file") with one identity.
func keyFile(keyHex string) string {
	return `keys:
  - identity: "device-0001"
    key_hex: "` + keyHex + `"
    endpoint: "urn:dev:0001"
`
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func writeFile(t *testing.T, name, content string, mode os.FileMode, uid int) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if uid >= 0 {
		if err := os.Chown(name, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}
