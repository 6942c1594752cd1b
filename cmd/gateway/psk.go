package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// pskUsage is the synopsis of `gateway psk`.
const pskUsage = `usage: gateway psk <command> (--config FILE | --store FILE) [flags] [arguments]

Administers the key store: a key file, or a PostgreSQL store. --config reads
the gateway's configuration for the store (store.type, store.path or
store.dsn/store.dsn_env), its key-encryption key (store.kek_file,
store.kek_env) and the identity-tag key; --store names a bare key file, with
--kek-file or --kek-env, --tag-key-file and --insecure-plaintext-keys. Keys
are never read from the command line. Every change is written atomically: a
key file is replaced, and a running gateway picks it up through its file
watcher; a PostgreSQL change is one transaction, and every gateway replica
sees it at once. Either way the sessions of revoked and rotated identities
close (R10).

commands:
  gen --identity ID --endpoint EP [binding flags] [--length 32]
        add an identity with a fresh random key, printed once on stdout
  add --identity ID --endpoint EP --key-format hex|base64|raw [--key-file F]
      [binding flags] [--allow-low-entropy]
        add an identity with a key read from stdin or from F
  add --from-csv F
        bulk provisioning, all or nothing (PostgreSQL: one COPY); a header row names the columns:
        identity|identity_hex, key_hex|key_base64, endpoint, and optionally
        server_name, backend, hash, versions, modes, legacy, allow_low_entropy
  list                  identities, tags and bindings (never keys)
  show ID               one identity (never its key)
  revoke ID             remove an identity
  rotate ID             give an identity a fresh random key, printed once
  import --identity EPSK_ID --client NAME --server NAME [--kdf both|sha256|sha384]
        RFC 9258: replace an external PSK by the keys imported from it for
        DTLS 1.3, printed once
  audit                 RFC 9257 findings by rule ID; exit 1 on a MUST finding
  export --format yaml|csv [ID...]
        identities with their PLAINTEXT keys, for device provisioning
  rekey --new-kek-file F | --new-kek-env NAME
        re-seal every key under a new key-encryption key (PostgreSQL: in one
        transaction; then restart every replica with the new key)

binding flags: --server-name SNI  --backend NAME  --hash sha256|sha384
  --versions 1.3,1.2  --modes psk_dhe_ke[,psk_ke]  --legacy
ID is the identity as text, or as hex with --hex (binary identities).
Exit status: 0 ok, 1 failure or MUST finding, 2 usage error.
`

// pskCommand is one `gateway psk` subcommand.
type pskCommand func(c *pskContext, args []string) error

var pskCommands = map[string]pskCommand{
	"gen":    pskGen,
	"add":    pskAdd,
	"list":   pskList,
	"show":   pskShow,
	"revoke": pskRevoke,
	"rotate": pskRotate,
	"import": pskImport,
	"audit":  pskAudit,
	"export": pskExport,
	"rekey":  pskRekey,
}

// pskContext is what a subcommand runs with.
type pskContext struct {
	ctx    context.Context // of the store's operations
	name   string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// pskCmd runs `gateway psk <command> …`. Results go to stdout, warnings and
// notes to stderr; neither ever carries a key, except the key blocks of gen,
// rotate and import and the output of export, which go to stdout only.
func pskCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"psk needs a command: " + strings.Join(pskCommandNames(), ", ")}
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" {
		fmt.Fprint(stdout, pskUsage)
		return nil
	}
	cmd, ok := pskCommands[name]
	if !ok {
		return usageError{fmt.Sprintf("unknown psk command %q (commands: %s)", name, strings.Join(pskCommandNames(), ", "))}
	}
	if err := refuseKeyArgs(args[1:]); err != nil {
		return err
	}
	err := cmd(&pskContext{ctx: context.Background(), name: name, stdin: stdin, stdout: stdout, stderr: stderr}, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func pskCommandNames() []string {
	names := make([]string, 0, len(pskCommands))
	for n := range pskCommands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// keyFlags are flag names that would put a key on the command line, where
// it is visible to every user in ps and lands in shell history (R9).
var keyFlags = map[string]bool{"key": true, "psk": true, "secret": true, "key-hex": true, "key-base64": true, "password": true}

// refuseKeyArgs refuses a key given as a flag, without repeating its value.
func refuseKeyArgs(args []string) error {
	for _, a := range args {
		if a == "--" {
			return nil
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if keyFlags[name] {
			return usageError{fmt.Sprintf("--%s: keys are never taken from the command line (other users see it in ps, "+
				"and it stays in shell history); pipe the key on stdin or name a file with --key-file, with --key-format hex|base64|raw", name)}
		}
	}
	return nil
}

// pskFlagSet is a flag set with the flags every subcommand shares: where the
// key store is.
type pskFlagSet struct {
	*flag.FlagSet
	c          *pskContext
	config     string
	store      string
	kekFile    string
	kekEnv     string
	tagKeyFile string
	plaintext  bool
}

func newPSKFlags(c *pskContext) *pskFlagSet {
	fs := &pskFlagSet{FlagSet: flag.NewFlagSet("psk "+c.name, flag.ContinueOnError), c: c}
	fs.SetOutput(io.Discard) // errors are returned, help is printed by parse
	fs.StringVar(&fs.config, "config", "", "gateway configuration `FILE`: locates the key file and its KEK")
	fs.StringVar(&fs.store, "store", "", "bare key `FILE` (instead of --config)")
	fs.StringVar(&fs.kekFile, "kek-file", "", "with --store: key-encryption key `FILE` of the store")
	fs.StringVar(&fs.kekEnv, "kek-env", "", "with --store: environment variable `NAME` holding the KEK")
	fs.StringVar(&fs.tagKeyFile, "tag-key-file", "", "with --store: identity-tag secret `FILE`, for tags that match the gateway's logs")
	fs.BoolVar(&fs.plaintext, "insecure-plaintext-keys", false, "with --store and a KEK: accept plaintext keys in the file")
	return fs
}

// parse parses args, allowing flags after positional arguments
// ("show ID --config F"); "--" ends the flags. It returns the positional
// arguments, and usage errors that never repeat a value that may be a key.
func (fs *pskFlagSet) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.printHelp()
				return nil, err
			}
			return nil, usageError{err.Error()}
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

func (fs *pskFlagSet) printHelp() {
	w := fs.c.stdout
	fmt.Fprintf(w, "usage: gateway psk %s [flags]; see `gateway psk help`\n\nflags:\n", fs.c.name)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// parseNone parses args for the subcommands that take flags only: a stray
// argument is refused without being echoed (it may be a key).
func (fs *pskFlagSet) parseNone(args []string) error {
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	return positional(pos, 0, 0, "")
}

// parseIdentity parses args for the subcommands that take exactly one
// identity (show, revoke, rotate): flags, then ID, text or, with --hex, hex.
func (fs *pskFlagSet) parseIdentity(args []string, isHex *bool, what string) ([]byte, error) {
	pos, err := fs.parse(args)
	if err != nil {
		return nil, err
	}
	if err := positional(pos, 1, 1, what); err != nil {
		return nil, err
	}
	return identityArg(pos[0], *isHex)
}

// positional checks the number of positional arguments without echoing
// them: a stray argument may be a key pasted in the wrong place.
func positional(args []string, min, max int, what string) error {
	switch {
	case len(args) < min:
		return usageError{"missing " + what}
	case len(args) > max:
		return usageError{fmt.Sprintf("%d unexpected arguments (not repeated here: one may be a key)", len(args)-max)}
	}
	return nil
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	fi, err := file.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
