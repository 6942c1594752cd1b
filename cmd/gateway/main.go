// Command gateway is the DTLS 1.3/1.2 PSK gateway for LwM2M/CoAP devices.
//
//	gateway serve --config FILE     run the gateway
//	gateway check-config FILE       validate a configuration file and its key store
//	gateway demo                    gateway + simulated devices + test backend on loopback
//
// This package only wires things together: flags, configuration, logger,
// store and signals. The work happens in gateway, pskstore and config.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

const usage = `usage: gateway <command> [arguments]

commands:
  serve --config FILE     run the gateway (JSON logs on stderr)
  check-config FILE       validate a configuration file and its key store, then exit
  demo [--devices N]      run the gateway with simulated devices and a built-in
                          LwM2M backend on loopback; Ctrl-C to stop
  psk <command> --config FILE
                          administer the key file: gen, add, list, show, revoke,
                          rotate, import, audit, export, rekey (gateway psk help)
`

// exitUsage is the conventional exit status for a command-line error.
const exitUsage = 2

// usageError marks errors in the command line itself.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "serve":
		err = serveCmd(args[1:], stderr)
	case "check-config":
		err = checkConfigCmd(args[1:], stdout)
	case "demo":
		err = demoCmd(args[1:], stdout, stderr)
	case "psk":
		err = pskCmd(args[1:], os.Stdin, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = usageError{fmt.Sprintf("unknown command %q", args[0])}
	}
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "gateway %s: %v\n", args[0], err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	return 1
}
