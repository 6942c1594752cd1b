package deploy

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/lwm2m-gateway/gateway/internal/pgtest"
)

// hostnameEnv, set in the environment of this test binary, makes it a
// launcher instead of a test run: it sets the host name of the UTS
// namespace it was started in (CLONE_NEWUTS) to the variable's value and
// executes its arguments, so a gateway sees the host name of a
// StatefulSet's pod ("lwm2m-gateway-1") without changing the machine's.
const hostnameEnv = "DEPLOY_TEST_EXEC_WITH_HOSTNAME"

func TestMain(m *testing.M) {
	if host := os.Getenv(hostnameEnv); host != "" {
		execWithHostname(host, os.Args[1:])
	}
	code := pgtest.Main(m) // m.Run, then stop the PostgreSQL cluster the tests started, if any
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// execWithHostname sets the host name and replaces this process by argv;
// it returns only by exiting.
func execWithHostname(host string, argv []string) {
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "deploy test launcher: nothing to execute")
		os.Exit(2)
	}
	if err := syscall.Sethostname([]byte(host)); err != nil {
		fmt.Fprintln(os.Stderr, "deploy test launcher: sethostname:", err)
		os.Exit(2)
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, hostnameEnv+"=") })
	err := syscall.Exec(argv[0], argv, env)
	fmt.Fprintln(os.Stderr, "deploy test launcher: exec:", err)
	os.Exit(2)
}
