package deploy

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// unit parses a systemd unit file into section -> key -> values (a key may
// repeat); comments and blank lines are skipped.
func unit(t *testing.T, file string) map[string]map[string][]string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", file, n, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// TestSystemdUnit: the hardening the unit promises (README.md).
func TestSystemdUnit(t *testing.T) {
	u := unit(t, "systemd/gateway.service")
	svc := u["Service"]
	want := map[string]string{
		"Type":                    "exec",
		"CapabilityBoundingSet":   "", // empty: no capability (5684 > 1024)
		"AmbientCapabilities":     "",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ReadOnlyPaths":           "/etc/gateway",
		"Restart":                 "on-failure",
		"ExecReload":              "/bin/kill -HUP $MAINPID", // SIGHUP reloads (cmd/gateway/reload.go)
		"RestartForceExitStatus":  "SIGHUP",                  // a SIGHUP before the handler is installed kills: restart
		"PrivateTmp":              "yes",
		"ProtectHome":             "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
	}
	for k, v := range want {
		got, ok := svc[k]
		if !ok || len(got) != 1 || got[0] != v {
			t.Errorf("[Service] %s = %q, want %q", k, got, v)
		}
	}
	exec := svc["ExecStart"]
	if len(exec) != 1 || !strings.HasSuffix(exec[0], " serve --config /etc/gateway/gateway.yaml") {
		t.Errorf("ExecStart %q, want the gateway's serve --config /etc/gateway/gateway.yaml", exec)
	}
	if user := svc["User"]; len(user) != 1 || user[0] == "" || user[0] == "root" {
		if dyn := svc["DynamicUser"]; len(dyn) != 1 || dyn[0] != "yes" {
			t.Errorf("User %q: want a dedicated user (or DynamicUser=yes)", user)
		}
	}
	if got := u["Install"]["WantedBy"]; len(got) != 1 || got[0] != "multi-user.target" {
		t.Errorf("[Install] WantedBy %q, want multi-user.target", got)
	}
}
