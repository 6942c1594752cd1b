// Command gateway is the DTLS 1.3/1.2 PSK gateway for LwM2M/CoAP devices.
//
//	gateway serve --config FILE     run the gateway
//	gateway check-config FILE       validate a configuration file and its key store
//	gateway demo                    gateway + simulated devices + test backend on loopback
//	gateway psk <command> …         administer the key store
//	gateway version                 print the version
//
// This package only wires things together: flags, configuration, logger,
// store and signals. The work happens in gateway, pskstore and config.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
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

// exitUsage is the conventional exit status for a command-line error.
const exitUsage = 2

// usageError is an error in the command line itself; usage is the
// command's own usage, printed after it.
type usageError struct{ msg, usage string }

func (e usageError) Error() string { return e.msg }

// io is what a command runs with.
type cmdIO struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

var commands = map[string]func(c cmdIO, args []string) error{
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
		return exitUsage
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
		return exitUsage
	}
	err := cmd(cmdIO{stdin, stdout, stderr}, args[1:])
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "gateway %s: %v\n", name, err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprint(stderr, strings.TrimLeft(ue.usage, "\n"))
		return exitUsage
	}
	return 1
}

// newFlags returns a flag set for a command whose usage is synopsis; parse
// with parseFlags.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned; --help is printed by parseFlags
	return fs
}

// parseFlags parses args, allowing flags after positional arguments
// ("show ID --config F"; "--" ends the flags), and returns the positional
// arguments. --help prints synopsis and the flags on stdout and returns
// flag.ErrHelp, which exits 0; a bad flag is a usageError carrying the
// same usage. Errors never repeat a value that may be a key.
func parseFlags(fs *flag.FlagSet, c cmdIO, synopsis string, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(c.stdout, commandUsage(fs, synopsis))
				return nil, err
			}
			return nil, usageError{err.Error(), commandUsage(fs, synopsis)}
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// commandUsage is synopsis followed by the flags of fs.
func commandUsage(fs *flag.FlagSet, synopsis string) string {
	var b strings.Builder
	b.WriteString(synopsis)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		b.WriteString("\nflags:\n")
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return b.String()
}

// positional checks the number of positional arguments without echoing
// them: a stray argument may be a key pasted in the wrong place.
func positional(args []string, min, max int, what, usage string) error {
	switch {
	case len(args) < min:
		return usageError{"missing " + what, usage}
	case len(args) > max:
		return usageError{fmt.Sprintf("%d unexpected arguments (not repeated here: one may be a key)", len(args)-max), usage}
	}
	return nil
}
