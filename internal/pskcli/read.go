package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/internal/cli"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/export"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/importer"
	"github.com/lwm2m-gateway/gateway/pskstore/postgres"
)

// keys lists every key of the store.
func (ks *keyStore) keys() ([]pskstore.Key, error) {
	l, err := capability[pskstore.Lister](ks, "list keys")
	if err != nil {
		return nil, err
	}
	return l.Keys(ctx())
}

// plaintext returns the identities whose key the store holds in plaintext.
func (ks *keyStore) plaintext() (map[string]bool, error) {
	out := make(map[string]bool)
	p, ok := ks.Store.(interface {
		PlaintextIdentities(context.Context) ([][]byte, error)
	})
	if !ok {
		return out, nil
	}
	ids, err := p.PlaintextIdentities(ctx())
	for _, id := range ids {
		out[string(id)] = true
	}
	return out, err
}

// pskList prints every identity with its tag and bindings, never a key.
func pskList(f *pskFlags, args []string) error {
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
	fmt.Fprintf(f.c.Stderr, "%d identities in %s, %s\n", len(keys), ks.where, ks.sealing())
	return nil
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// pskShow prints one identity, never its key.
func pskShow(f *pskFlags, args []string) error {
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
	} else if plain[string(k.Identity)] && ks.kek != nil {
		at = "PLAINTEXT at rest (allowed by insecure_plaintext_keys), seal it with gateway psk rekey"
	}
	row("key", "%d bytes, %s", len(k.Secret), at)
	return tw.Flush()
}

// pskExport prints identities with their PLAINTEXT keys and every binding
// for device provisioning, on stdout only, after a warning on stderr.
func pskExport(f *pskFlags, args []string) error {
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

// pskAudit runs the RFC 9257 policy over the whole store and prints every
// finding with its rule ID: a MUST finding (the gateway would refuse to load
// the store) exits 1, SHOULD findings and store warnings exit 0. A store that
// does not load is audited from its load errors.
func pskAudit(f *pskFlags, args []string) error {
	if _, err := f.parse(args, 0, 0, ""); err != nil {
		return err
	}
	a := &audit{w: f.c.Stdout}
	ks, err := f.open(false, false)
	var keys []pskstore.Key
	if err == nil {
		defer ks.Close()
		keys, err = ks.keys()
	}
	switch {
	case err == nil:
		for _, p := range pskstore.CheckKeys(keys, ks.policy) {
			a.finding(string(p.Rule), p.Severity, fmt.Sprintf("keys[%d] identity %s (%s): %s", p.Index, export.Show(keys[p.Index].Identity), p.Tag, p.Msg))
		}
		a.storeChecks(ks)
	case !a.loadErrors(err):
		return err
	}
	where := f.store
	if ks != nil {
		where = ks.where
	}
	fmt.Fprintf(f.c.Stdout, "audit: %d keys in %s, %d MUST findings, %d SHOULD findings, %d store warnings\n",
		len(keys), or(where, f.config), a.must, a.should, a.warnings)
	if a.must > 0 {
		what := "key file"
		if f.cfg != nil && f.cfg.Store.Type == config.StorePostgres {
			what = "key store"
		}
		return fmt.Errorf("%d MUST findings: the gateway refuses this %s", a.must, what)
	}
	return nil
}

type audit struct {
	w                      io.Writer
	must, should, warnings int
}

func (a *audit) finding(rule string, sev pskstore.Severity, msg string) {
	label := "MUST"
	if sev == pskstore.SeverityShould {
		label = "SHOULD"
		a.should++
	} else {
		a.must++
	}
	fmt.Fprintf(a.w, "%-5s %-6s %s\n", rule, label, msg)
}

func (a *audit) warn(msg string) {
	a.warnings++
	fmt.Fprintf(a.w, "%-5s %-6s %s\n", "store", "WARN", msg)
}

// loadErrors reports the errors of a store that does not open because of
// its keys: policy findings with their rule, anything else (syntax,
// schema, a wrong KEK) as a MUST finding without a rule. It returns false
// for an error that is not about the keys (no such file, database down).
func (a *audit) loadErrors(err error) bool {
	var pe *file.ParseError
	var ke *postgres.KeyError
	if !errors.As(err, &pe) && !errors.As(err, &ke) {
		return false
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var pol *pskstore.PolicyError
		if errors.As(e, &pe) && errors.As(e, &pol) {
			msg := fmt.Sprintf("%s:%d: keys[%d].%s: ", pe.Path, pe.Line, pe.Entry, pe.Field)
			if pol.Tag != "" {
				msg += "identity " + pol.Tag + ": "
			}
			a.finding(string(pol.Rule), pol.Severity, msg+pol.Msg)
		} else {
			a.finding("-", pskstore.SeverityMust, e.Error())
		}
	}
	return true
}

// storeChecks reports how the keys are kept: file modes, plaintext at
// rest, a password in the configuration file.
func (a *audit) storeChecks(ks *keyStore) {
	if !ks.shared {
		if err := file.CheckMode(ks.where); err != nil {
			a.warn(fmt.Sprintf("%s: %v (R9)", ks.where, err))
		}
	}
	plain, err := ks.plaintext()
	switch {
	case ks.kek == nil:
		a.warn(ks.where + ": keys are stored in plaintext at rest; configure a key-encryption key and run gateway psk rekey")
	case err != nil:
		a.warn(ks.where + ": " + err.Error())
	case len(plain) > 0:
		a.warn(fmt.Sprintf("%s: %d keys in plaintext at rest (insecure_plaintext_keys); seal them with gateway psk rekey", ks.where, len(plain)))
	}
	if ks.cfg.KEKFile != "" {
		if err := file.CheckMode(ks.cfg.KEKFile); err != nil {
			a.warn(fmt.Sprintf("%s: kek file %v", ks.cfg.KEKFile, err))
		}
	}
	if ks.cfg.DSN != "" && config.DSNHasPassword(ks.cfg.DSN) {
		a.warn("store.dsn holds a password in the configuration file; move the DSN to an environment variable (store.dsn_env) (R9)")
	}
}

// progress reports how far a long write is, on stderr: a bar redrawn in
// place on a terminal, otherwise a plain line at every tenth.
type progress struct {
	w            io.Writer
	tty          bool
	label        string
	total, tenth int
	last         time.Time
}

func newProgress(w io.Writer, label string, total int) *progress {
	return &progress{w: w, tty: isTerminal(w), label: label, total: total}
}

func (p *progress) update(n int) {
	if p.tty && time.Since(p.last) >= 100*time.Millisecond {
		p.last = time.Now()
		fmt.Fprintf(p.w, "\r%s [%-30s] %d/%d", p.label, strings.Repeat("#", n*30/p.total), n, p.total)
	} else if t := n * 10 / p.total; !p.tty && t > p.tenth && n < p.total {
		p.tenth = t
		fmt.Fprintf(p.w, "%s: %d/%d (%d%%)\n", p.label, n, p.total, n*100/p.total)
	}
}

func (p *progress) done() {
	if p.tty {
		fmt.Fprintf(p.w, "\r%s [%s] %d/%d\n", p.label, strings.Repeat("#", 30), p.total, p.total)
		return
	}
	fmt.Fprintf(p.w, "%s: %d/%d (100%%)\n", p.label, p.total, p.total)
}
