package main

import (
	"encoding/hex"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/importer"
)

// pskList prints every identity with its tag and bindings, never a key.
func pskList(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	if err := fs.parseNone(args); err != nil {
		return err
	}
	ks, err := fs.open(readOnly)
	if err != nil {
		return err
	}
	defer ks.close()
	keys, err := ks.admin.list(c.ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tTAG\tENDPOINT\tSERVER_NAME\tBACKEND\tVERSIONS\tMODES\tFLAGS")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", plainID(k.Identity), ks.tag(k.Identity), orDash(k.Endpoint),
			orDash(k.ServerName), orDash(k.Backend), versionList(k.Versions), k.Modes, orDash(strings.Join(keyFlagsOf(k), ",")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "%d identities in %s, %s\n", len(keys), ks.where(), ks.sealing())
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func versionList(v pskstore.Versions) string {
	var out []string
	if v.Has(pskstore.DTLS13) {
		out = append(out, "1.3")
	}
	if v.Has(pskstore.DTLS12) {
		out = append(out, "1.2")
	}
	return strings.Join(out, ",")
}

func keyFlagsOf(k pskstore.Key) []string {
	var f []string
	if k.Legacy {
		f = append(f, "legacy")
	}
	if k.AllowLowEntropy {
		f = append(f, "low-entropy-allowed")
	}
	if k.Group {
		f = append(f, "group")
	}
	if k.ImportContext != nil {
		f = append(f, "imported")
	}
	return f
}

// pskShow prints one identity, never its key.
func pskShow(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	isHex := fs.Bool("hex", false, "the ID argument is hex")
	id, err := fs.parseIdentity(args, isHex, "identity: show ID")
	if err != nil {
		return err
	}
	ks, err := fs.open(readOnly)
	if err != nil {
		return err
	}
	defer ks.close()
	k, err := ks.find(c.ctx, id)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	row := func(name, format string, args ...any) { fmt.Fprintf(tw, name+"\t"+format+"\n", args...) }
	row("identity", "%s", showID(k.Identity))
	row("identity_hex", "%s", hex.EncodeToString(k.Identity))
	row("tag", "%s", ks.tag(k.Identity))
	row("endpoint", "%s", orDash(k.Endpoint))
	row("server_name", "%s", orNote(k.ServerName, "(not bound to a server name)"))
	row("backend", "%s", orNote(k.Backend, "(the default backend)"))
	row("hash", "%s", hashName(k.Hash))
	row("versions", "%s", versionList(k.Versions))
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
	if ks.kek != nil && ks.plaintext {
		plain, err := ks.admin.plaintext(c.ctx)
		if err != nil {
			return err
		}
		if plain[string(k.Identity)] {
			at = "PLAINTEXT at rest (allowed by insecure_plaintext_keys), seal it with gateway psk rekey"
		}
	}
	row("key", "%d bytes, %s", len(k.Secret), at)
	return tw.Flush()
}

func orNote(s, note string) string {
	if s == "" {
		return note
	}
	return s
}

// pskExport prints identities with their PLAINTEXT keys for device
// provisioning, on stdout only, after a warning on stderr.
func pskExport(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	format := fs.String("format", "", "output `format`: yaml or csv (required)")
	isHex := fs.Bool("hex", false, "the ID arguments are hex")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if *format != "yaml" && *format != "csv" {
		return usageError{"--format yaml|csv is required"}
	}
	ks, err := fs.open(readOnly)
	if err != nil {
		return err
	}
	defer ks.close()
	var keys []pskstore.Key
	if len(pos) == 0 {
		if keys, err = ks.admin.list(c.ctx); err != nil {
			return err
		}
	}
	for _, arg := range pos {
		id, err := identityArg(arg, *isHex)
		if err != nil {
			return err
		}
		k, err := ks.find(c.ctx, id)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	fmt.Fprintf(c.stderr, "warning: the output holds %d PLAINTEXT keys: hand it to the provisioning system over a secure channel, "+
		"never to logs, tickets or chat, and delete it afterwards\n", len(keys))
	if *format == "csv" {
		return exportCSV(c.stdout, keys)
	}
	return exportYAML(c.stdout, keys)
}
