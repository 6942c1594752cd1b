// Command gateway is the DTLS 1.3/1.2 PSK gateway for LwM2M/CoAP devices.
//
//	gateway serve --config FILE     run the gateway
//	gateway check-config FILE       validate a configuration file and its key store
//	gateway demo                    gateway + simulated devices + test backend on loopback
//	gateway psk <command> …         administer the key store
//	gateway version                 print the version
//
// This package only wires things together: flags, configuration, logger,
// store and signals. The work happens in gateway, pskstore and config; the
// psk tool is internal/pskcli, run on the store this package opens.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/lwm2m-gateway/gateway/internal/cli"
)

const usage = `usage: gateway <command> [arguments]

commands:
  serve --config FILE     run the gateway (JSON logs on stderr)
  check-config FILE       validate a configuration file and its key store, and
                          report what serve would warn about, then exit
  demo [--devices N]      run the gateway with simulated devices and a built-in
                          LwM2M backend on loopback; Ctrl-C to stop
  psk <command> --config FILE
                          administer the key store: gen, add, list, show, revoke,
                          rotate, import, audit, export, rekey (gateway psk help)
  version                 print the version and commit (also: --version)

Every command takes --help.
`

var commands = map[string]func(c cli.IO, args []string) error{
	"serve":        serveCmd,
	"check-config": checkConfigCmd,
	"demo":         demoCmd,
	"psk":          pskCmd,
	"version":      versionCmd,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.ExitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "-version", "--version":
		name = "version"
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "gateway: unknown command %q\n%s", name, usage)
		return cli.ExitUsage
	}
	return cli.Exit(stderr, "gateway "+name, cmd(cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr}, args[1:]))
}
