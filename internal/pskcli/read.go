package pskcli

import (
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/lwm2m-gateway/gateway/internal/cli"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/export"
	"github.com/lwm2m-gateway/gateway/pskstore/importer"
)

// listCmd prints every identity with its tag and bindings, never a key.
func listCmd(f *cmdFlags, args []string) error {
	if _, err := f.parse(args, 0, 0, ""); err != nil {
		return err
	}
	ks, err := f.open(false, false)
	if err != nil {
		return err
	}
	defer ks.Close()
	keys, err := ks.keys()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(f.c.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tTAG\tENDPOINT\tSERVER_NAME\tBACKEND\tVERSIONS\tMODES\tFLAGS")
	for _, k := range keys {
		var flags []string
		for _, fl := range []struct {
			on   bool
			name string
		}{{k.Legacy, "legacy"}, {k.AllowLowEntropy, "low-entropy-allowed"}, {k.Group, "group"}, {k.ImportContext != nil, "imported"}} {
			if fl.on {
				flags = append(flags, fl.name)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", plainID(k.Identity), ks.tag(k.Identity), or(k.Endpoint, "-"),
			or(k.ServerName, "-"), or(k.Backend, "-"), k.Versions, k.Modes, or(strings.Join(flags, ","), "-"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(f.c.Stderr, "%d identities in %s, %s\n", len(keys), ks.Where, ks.sealing())
	return nil
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// showCmd prints one identity, never its key.
func showCmd(f *cmdFlags, args []string) error {
	isHex := f.Bool("hex", false, "the ID argument is hex")
	id, err := f.parseID(args, isHex)
	if err != nil {
		return err
	}
	ks, err := f.open(false, false)
	if err != nil {
		return err
	}
	defer ks.Close()
	k, err := ks.find(id)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(f.c.Stdout, 0, 4, 2, ' ', 0)
	row := func(name, format string, args ...any) { fmt.Fprintf(tw, name+"\t"+format+"\n", args...) }
	row("identity", "%s", export.Show(k.Identity))
	row("identity_hex", "%s", hex.EncodeToString(k.Identity))
	row("tag", "%s", ks.tag(k.Identity))
	row("endpoint", "%s", or(k.Endpoint, "-"))
	row("server_name", "%s", or(k.ServerName, "(not bound to a server name)"))
	row("backend", "%s", or(k.Backend, "(the default backend)"))
	row("hash", "%s", pskstore.Hash(k.Hash))
	row("versions", "%s", k.Versions)
	row("modes", "%s", k.Modes)
	row("legacy", "%t", k.Legacy)
	row("allow_low_entropy", "%t", k.AllowLowEntropy)
	row("group", "%t", k.Group)
	if k.ImportContext != nil {
		if client, server, err := importer.ParseContext(k.ImportContext); err == nil {
			row("import_context", "client %q, server %q", client, server)
		} else {
			row("import_context", "%s", hex.EncodeToString(k.ImportContext))
		}
	}
	at := ks.sealing()
	if plain, err := ks.plaintext(); err != nil {
		return err
	} else if plain[string(k.Identity)] && ks.KEK != nil {
		at = "PLAINTEXT at rest (allowed by insecure_plaintext_keys), seal it with gateway psk rekey"
	}
	row("key", "%d bytes, %s", len(k.Secret), at)
	return tw.Flush()
}

// exportCmd prints identities with their PLAINTEXT keys and every binding
// for device provisioning, on stdout only, after a warning on stderr.
func exportCmd(f *cmdFlags, args []string) error {
	format := f.String("format", "", "output `format`: yaml or csv (required)")
	isHex := f.Bool("hex", false, "the ID arguments are hex")
	pos, err := f.parse(args, 0, 1<<20, "")
	if err != nil {
		return err
	}
	write := map[string]func(io.Writer, []pskstore.Key) error{"yaml": export.WriteYAML, "csv": export.WriteCSV}[*format]
	if write == nil {
		return cli.UsageError{Msg: fmt.Sprintf("--format %q: the formats are yaml and csv", *format), Usage: f.usage()}
	}
	ks, err := f.open(false, false)
	if err != nil {
		return err
	}
	defer ks.Close()
	var keys []pskstore.Key
	if len(pos) == 0 {
		if keys, err = ks.keys(); err != nil {
			return err
		}
	}
	for _, arg := range pos {
		id, err := identityArg(arg, *isHex)
		if err != nil {
			return err
		}
		k, err := ks.find(id)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	fmt.Fprintf(f.c.Stderr, "warning: the output holds %d PLAINTEXT keys: hand it to the provisioning system over a secure channel, "+
		"never to logs, tickets or chat, and delete it afterwards\n", len(keys))
	return write(f.c.Stdout, keys)
}
