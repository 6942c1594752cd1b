// Package cli holds the command-line conventions every gateway command
// shares, so that `gateway serve`, `check-config`, `demo`, `version` and
// the `psk` tool (internal/pskcli) behave alike: flags may follow
// positional arguments, --help prints the command's own usage on stdout and
// exits 0, a command-line error prints the command's own usage on stderr
// and exits 2, any other failure exits 1, and no error repeats an argument
// that may be a key. It owns no command; it imports nothing of this module.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// ExitUsage is the conventional exit status for a command-line error.
const ExitUsage = 2

// IO is what a command runs with.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// UsageError is an error in the command line itself; Usage is the
// command's own usage, printed after the message ("" prints none).
type UsageError struct{ Msg, Usage string }

func (e UsageError) Error() string { return e.Msg }

// Exit reports err of the command named name ("gateway psk") on stderr and
// returns the exit status: 0 for no error or flag.ErrHelp (--help was
// printed), ExitUsage for a UsageError (its usage follows the message), 1
// for anything else.
func Exit(stderr io.Writer, name string, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	var ue UsageError
	if errors.As(err, &ue) {
		fmt.Fprint(stderr, strings.TrimLeft(ue.Usage, "\n"))
		return ExitUsage
	}
	return 1
}

// NewFlags returns a flag set for a command; parse it with Parse.
func NewFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned; --help is printed by Parse
	return fs
}

// Parse parses args, allowing flags after positional arguments
// ("show ID --config F"; "--" ends the flags), and returns the positional
// arguments. --help prints synopsis and the flags on c.Stdout and returns
// flag.ErrHelp, which exits 0; a bad flag is a UsageError carrying the
// same usage. Errors never repeat a value that may be a key.
func Parse(fs *flag.FlagSet, c IO, synopsis string, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(c.Stdout, Usage(fs, synopsis))
				return nil, err
			}
			return nil, UsageError{err.Error(), Usage(fs, synopsis)}
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

// Usage is synopsis followed by the flags of fs.
func Usage(fs *flag.FlagSet, synopsis string) string {
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

// Positional checks the number of positional arguments without echoing
// them: a stray argument may be a key pasted in the wrong place.
func Positional(args []string, min, max int, what, usage string) error {
	switch {
	case len(args) < min:
		return UsageError{"missing " + what, usage}
	case len(args) > max:
		return UsageError{fmt.Sprintf("%d unexpected arguments (not repeated here: one may be a key)", len(args)-max), usage}
	}
	return nil
}
