// Package pskcli is the `gateway psk` tool: its subcommands (gen, add,
// list, show, revoke, rotate, import, audit, export, rekey), their flags,
// the key blocks, tables and export formats it prints, the audit report, and
// the explanations of a refused write. It changes a store only through
// pskstore's capabilities (Lister, Putter, Deleter, Rotator, Replacer,
// sealed.Rekeyer) and checks keys with pskstore's policy.
//
// It never opens a store itself: the command that runs it hands in how the
// gateway opens the store a configuration names (Config.Open), so that the
// tool and `gateway serve` read the same store with the same key-encryption
// key and identity-tag key. It imports config and pskstore, never gateway
// (DESIGN.md §2, internal/deptest).
package pskcli

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/internal/cli"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// usage is the synopsis of `gateway psk`.
const usage = `usage: gateway psk <command> (--config FILE | --store FILE) [flags] [arguments]

Administers the key store: a key file, or a PostgreSQL store. --config reads
the gateway's configuration for the store (store.type, store.path or
store.dsn/store.dsn_env), its key-encryption key (store.kek_file,
store.kek_env) and the identity-tag key; --store names a bare key file, with
--kek-file or --kek-env, --tag-key-file and --insecure-plaintext-keys.
Identity tags are keyed like the gateway's: store.tag_key_file, else the
tag.key file next to the key file (generated on first use) or the key kept
in PostgreSQL. Keys are never read from the command line. Every change is
one atomic write checked against the RFC 9257 policy: a key file is
replaced, and a running gateway picks it up through its file watcher; a
PostgreSQL change is one transaction, and every gateway replica sees it at
once. Either way the sessions of revoked and rotated identities close (R10).

commands:
  gen --identity ID --endpoint EP [binding flags] [--length 32]
        add an identity with a fresh random key, printed once on stdout
  add --identity ID --endpoint EP --key-format hex|base64|raw [--key-file F]
      [binding flags] [--allow-low-entropy]
        add an identity with a key read from stdin or from F
  add --from-csv F
        bulk provisioning, all or nothing (PostgreSQL: one COPY); a header row
        names the columns, those of export --format csv (identity|identity_hex,
        key_hex|key_base64, endpoint, server_name, backend, hash, versions,
        modes, legacy, allow_low_entropy, group, import_context_hex)
  list                  identities, tags and bindings (never keys)
  show ID               one identity (never its key)
  revoke ID             remove an identity
  rotate ID             give an identity a fresh random key, printed once
  import --identity EPSK_ID --client NAME --server NAME [--kdf both|sha256|sha384]
        RFC 9258: replace an external PSK by the keys imported from it for
        DTLS 1.3, bound to the server name NAME (R5), printed once
  audit                 RFC 9257 findings by rule ID; exit 1 on a MUST finding
  export --format yaml|csv [ID...]
        identities with their PLAINTEXT keys and every binding, for device
        provisioning; add --from-csv reads the csv back
  rekey --new-kek-file F | --new-kek-env NAME
        re-seal every key under a new key-encryption key (PostgreSQL: in one
        transaction; then restart every replica with the new key)

binding flags: --server-name SNI  --backend NAME  --hash sha256|sha384
  --versions 1.3,1.2  --modes psk_dhe_ke[,psk_ke]  --legacy
ID is the identity as text, or as hex with --hex (binary identities).
Every command takes --help. Exit status: 0 ok, 1 failure or MUST finding,
2 usage error.
`

var commands = map[string]func(f *cmdFlags, args []string) error{
	"gen": genCmd, "add": addCmd, "list": listCmd, "show": showCmd, "revoke": revokeCmd,
	"rotate": rotateCmd, "import": importCmd, "audit": auditCmd, "export": exportCmd, "rekey": rekeyCmd,
}

// Config is what the tool takes from the command that runs it: how the
// gateway opens a key store and reads a key-encryption key.
type Config struct {
	// Open opens the store cfg names, as serve opens it (store.type, its
	// KEK, the identity-tag key). It may return a Store with an error: a
	// store that was found but does not load, whose Where audit reports.
	Open func(cfg *config.Config, o OpenOptions) (*Store, error)
	// LoadKEK reads a key-encryption key from the file path or the
	// environment variable env (one of them is given): the new KEK of
	// rekey.
	LoadKEK func(path, env string) (*sealed.KEK, error)
}

// OpenOptions say how a command opens the store.
type OpenOptions struct {
	Create    bool // a missing key file is an empty store (gen, add)
	Plaintext bool // accept plaintext keys whatever the configuration says (rekey)
	// Announce tells the operator something the opening did, such as
	// generating the identity-tag key; it prints a note on stderr.
	Announce func(msg string)
}

// Store is an opened key store with what goes with it.
type Store struct {
	pskstore.Store                  // the backend; its capabilities are type-asserted
	Policy         pskstore.Options // its policy, Tagger included (never nil)
	KEK            *sealed.KEK      // nil: keys are kept in plaintext
	Config         config.Store     // the configuration it was opened with
	Where          string           // the key file, or the database and schema; never credentials
	Shared         bool             // PostgreSQL: every replica reads and watches it
}

// Run runs `gateway psk <command> …` (args without "psk"). Results go to
// c.Stdout, warnings and notes to c.Stderr; neither ever carries a key,
// except the key blocks of gen, rotate and import and the output of
// export, which go to c.Stdout only. A command-line error is a
// cli.UsageError carrying the command's usage; --help returns
// flag.ErrHelp after printing it (cli.Exit turns both into exit statuses).
func Run(cfg Config, c cli.IO, args []string) error {
	names := strings.Join(slices.Sorted(maps.Keys(commands)), ", ")
	if len(args) == 0 {
		return cli.UsageError{Msg: "psk needs a command: " + names, Usage: usage}
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "-help" || name == "--help" {
		fmt.Fprint(c.Stdout, usage)
		return nil
	}
	cmd, ok := commands[name]
	if !ok {
		return cli.UsageError{Msg: fmt.Sprintf("unknown psk command %q (commands: %s)", name, names), Usage: usage}
	}
	f := newCmdFlags(cfg, c, name)
	if err := refuseKeyArgs(args[1:]); err != nil {
		return cli.UsageError{Msg: err.Error(), Usage: f.usage()}
	}
	if err := cmd(f, args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
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
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && keyFlags[name] {
			return fmt.Errorf("--%s: keys are never taken from the command line (other users see it in ps, "+
				"and it stays in shell history); pipe the key on stdin or name a file with --key-file, with --key-format hex|base64|raw", name)
		}
	}
	return nil
}

// cmdFlags is the flag set of one psk command, with the flags every
// command shares: where the key store is.
type cmdFlags struct {
	*flag.FlagSet
	wiring                               Config
	c                                    cli.IO
	name                                 string
	config, store, kekFile, kekEnv, tags string
	plaintext                            bool
	cfg                                  *config.Config // loaded by open; nil with --store
}

func newCmdFlags(wiring Config, c cli.IO, name string) *cmdFlags {
	f := &cmdFlags{FlagSet: cli.NewFlags("psk " + name), wiring: wiring, c: c, name: name}
	f.StringVar(&f.config, "config", "", "gateway configuration `FILE`: locates the key store, its KEK and tag key")
	f.StringVar(&f.store, "store", "", "bare key `FILE` (instead of --config)")
	f.StringVar(&f.kekFile, "kek-file", "", "with --store: key-encryption key `FILE` of the store")
	f.StringVar(&f.kekEnv, "kek-env", "", "with --store: environment variable `NAME` holding the KEK")
	f.StringVar(&f.tags, "tag-key-file", "", "with --store: identity-tag key `FILE` (default: tag.key next to the store)")
	f.BoolVar(&f.plaintext, "insecure-plaintext-keys", false, "with --store and a KEK: accept plaintext keys in the file")
	return f
}

func (f *cmdFlags) usage() string {
	return cli.Usage(f.FlagSet, "usage: gateway psk "+f.name+" (--config FILE | --store FILE) [flags]; see gateway psk help\n")
}

// parse parses args and checks the number of positional arguments.
func (f *cmdFlags) parse(args []string, min, max int, what string) ([]string, error) {
	pos, err := cli.Parse(f.FlagSet, f.c, f.usage(), args)
	if err != nil {
		return nil, err
	}
	return pos, cli.Positional(pos, min, max, what, f.usage())
}

// parseID parses args for the commands that take one identity: text, or
// hex with --hex.
func (f *cmdFlags) parseID(args []string, isHex *bool) ([]byte, error) {
	pos, err := f.parse(args, 1, 1, "identity: psk "+f.name+" ID")
	if err != nil {
		return nil, err
	}
	return identityArg(pos[0], *isHex)
}

// open opens the key store named by --config or --store, as serve would
// (Config.Open); create lets gen and add start a new key file, plaintext
// lets rekey read plaintext keys in a store with a KEK.
func (f *cmdFlags) open(create, plaintext bool) (*Store, error) {
	switch {
	case f.config != "" && f.store != "":
		return nil, cli.UsageError{Msg: "give --config or --store, not both", Usage: f.usage()}
	case f.config == "" && f.store == "":
		return nil, cli.UsageError{Msg: "give --config FILE (the gateway's configuration) or --store FILE (a bare key file)", Usage: f.usage()}
	case f.config != "" && (f.kekFile != "" || f.kekEnv != "" || f.tags != "" || f.plaintext):
		return nil, cli.UsageError{Msg: "--kek-file, --kek-env, --tag-key-file and --insecure-plaintext-keys go with --store; with --config they come from the configuration", Usage: f.usage()}
	case f.kekFile != "" && f.kekEnv != "":
		return nil, cli.UsageError{Msg: "give --kek-file or --kek-env, not both", Usage: f.usage()}
	}
	cfg := config.Default()
	cfg.Store = config.Store{Type: config.StoreFile, Path: f.store, KEKFile: f.kekFile, KEKEnv: f.kekEnv, TagKeyFile: f.tags, InsecurePlaintextKeys: f.plaintext}
	if f.config != "" {
		var err error
		if cfg, err = config.Load(f.config); err != nil {
			return nil, err
		}
		if cfg.Store.Type == config.StoreMemory {
			return nil, fmt.Errorf("%s: store.type is memory: gateway psk administers a file or postgres store", f.config)
		}
		f.cfg = cfg
	}
	return f.wiring.Open(cfg, OpenOptions{Create: create, Plaintext: plaintext,
		Announce: func(msg string) { fmt.Fprintln(f.c.Stderr, "note: "+msg) }})
}

// identityArg reads the ID argument of show, revoke, rotate and export: text,
// or hex with --hex.
func identityArg(arg string, isHex bool) ([]byte, error) {
	if !isHex {
		return []byte(arg), nil
	}
	b, err := hexID(arg)
	if err != nil {
		return nil, cli.UsageError{Msg: "--hex: the identity is not valid hex"}
	}
	return b, nil
}
