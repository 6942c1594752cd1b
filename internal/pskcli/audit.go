package pskcli

import (
	"errors"
	"fmt"
	"io"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/export"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/postgres"
)

// auditCmd runs the RFC 9257 policy over the whole store and prints every
// finding with its rule ID: a MUST finding (the gateway would refuse to load
// the store) exits 1, SHOULD findings and store warnings exit 0. A store that
// does not load is audited from its load errors.
func auditCmd(f *cmdFlags, args []string) error {
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
		for _, p := range pskstore.CheckKeys(keys, ks.Policy) {
			a.finding(string(p.Rule), p.Severity, fmt.Sprintf("keys[%d] identity %s (%s): %s", p.Index, export.Show(keys[p.Index].Identity), p.Tag, p.Msg))
		}
		a.storeChecks(ks)
	case !a.loadErrors(err):
		return err
	}
	where := f.store
	if ks != nil {
		where = ks.Where
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
func (a *audit) storeChecks(ks *Store) {
	if !ks.Shared {
		if err := file.CheckMode(ks.Where); err != nil {
			a.warn(fmt.Sprintf("%s: %v (R9)", ks.Where, err))
		}
	}
	plain, err := ks.plaintext()
	switch {
	case ks.KEK == nil:
		a.warn(ks.Where + ": keys are stored in plaintext at rest; configure a key-encryption key and run gateway psk rekey")
	case err != nil:
		a.warn(ks.Where + ": " + err.Error())
	case len(plain) > 0:
		a.warn(fmt.Sprintf("%s: %d keys in plaintext at rest (insecure_plaintext_keys); seal them with gateway psk rekey", ks.Where, len(plain)))
	}
	if ks.Config.KEKFile != "" {
		if err := file.CheckMode(ks.Config.KEKFile); err != nil {
			a.warn(fmt.Sprintf("%s: kek file %v", ks.Config.KEKFile, err))
		}
	}
	if ks.Config.DSN != "" && config.DSNHasPassword(ks.Config.DSN) {
		a.warn("store.dsn holds a password in the configuration file; move the DSN to an environment variable (store.dsn_env) (R9)")
	}
}
