package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/postgres"
)

// pskAudit runs the RFC 9257 policy over the whole store and prints every
// finding with its rule ID: a MUST finding (the gateway would refuse to load
// the store) exits 1, SHOULD findings and store warnings exit 0. A store that
// does not load is audited from its load errors.
func pskAudit(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	if err := fs.parseNone(args); err != nil {
		return err
	}
	ks, err := fs.open(auditing)
	if err != nil {
		return err
	}
	defer ks.close()
	a := &audit{w: c.stdout}
	keys, err := ks.admin.list(c.ctx)
	if err != nil {
		a.loadErrors(ks.where(), err)
	} else {
		for _, f := range pskstore.CheckKeys(keys, ks.policy) {
			k := keys[f.Index]
			a.finding(string(f.Rule), f.Severity, fmt.Sprintf("keys[%d] identity %s (%s): %s", f.Index, showID(k.Identity), f.Tag, f.Msg))
		}
	}
	if err := a.storeChecks(c.ctx, ks); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "audit: %d keys in %s, %d MUST findings, %d SHOULD findings, %d store warnings\n",
		len(keys), ks.where(), a.must, a.should, a.warnings)
	if a.must > 0 {
		what := "key file"
		if ks.shared {
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

// loadErrors reports the errors of a file that does not load: policy
// findings with their rule, anything else (syntax, schema, a wrong KEK) as a
// MUST finding without a rule.
func (a *audit) loadErrors(path string, err error) {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var pe *file.ParseError
		var pol *pskstore.PolicyError
		switch {
		case errors.As(e, &pe) && errors.As(e, &pol):
			msg := fmt.Sprintf("%s:%d: keys[%d].%s: ", path, pe.Line, pe.Entry, pe.Field)
			if pol.Tag != "" {
				msg += "identity " + pol.Tag + ": "
			}
			a.finding(string(pol.Rule), pol.Severity, msg+pol.Msg)
		default:
			a.finding("-", pskstore.SeverityMust, e.Error())
		}
	}
}

// storeChecks reports how the keys are kept: file modes, plaintext at
// rest, a password in the configuration file.
func (a *audit) storeChecks(ctx context.Context, ks *keyStore) error {
	where := ks.where()
	if kf, ok := ks.admin.(*keyFile); ok {
		if fi, err := os.Stat(kf.path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			a.warn(fmt.Sprintf("%s: mode %04o is readable by group or others; use 0600 (R9)", kf.path, fi.Mode().Perm()))
		}
	}
	switch {
	case ks.kek == nil:
		a.warn(fmt.Sprintf("%s: keys are stored in plaintext at rest; configure a key-encryption key and run gateway psk rekey", where))
	case ks.plaintext:
		plain, err := ks.admin.plaintext(ctx)
		var ke *postgres.KeyError
		switch {
		case errors.As(err, &ke): // reported by loadErrors
		case err != nil:
			return err
		case len(plain) > 0:
			a.warn(fmt.Sprintf("%s: %d keys in plaintext at rest (insecure_plaintext_keys); seal them with gateway psk rekey", where, len(plain)))
		}
	}
	if ks.cfg != nil && ks.cfg.Store.KEKFile != "" {
		if fi, err := os.Stat(ks.cfg.Store.KEKFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			a.warn(fmt.Sprintf("%s: kek file mode %04o is readable by group or others; use 0400 or 0600", ks.cfg.Store.KEKFile, fi.Mode().Perm()))
		}
	}
	if ks.cfg != nil && ks.cfg.Store.DSN != "" && config.DSNHasPassword(ks.cfg.Store.DSN) {
		a.warn("store.dsn holds a password in the configuration file; move the DSN to an environment variable (store.dsn_env) (R9)")
	}
	return nil
}

// plaintextEntries returns the positions of the entries whose key is
// written in plaintext (key_hex, key_base64).
func (kf *keyFile) plaintextEntries() map[int]bool {
	var doc yaml.Node
	if yaml.Unmarshal(kf.data, &doc) != nil || len(doc.Content) == 0 {
		return nil
	}
	top := doc.Content[0]
	out := make(map[int]bool)
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value != "keys" {
			continue
		}
		for j, item := range top.Content[i+1].Content {
			for f := 0; f+1 < len(item.Content); f += 2 {
				if name := item.Content[f].Value; name == "key_hex" || name == "key_base64" {
					out[j] = true
				}
			}
		}
	}
	return out
}
