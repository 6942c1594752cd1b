package pskcli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/lwm2m-gateway/gateway/internal/cli"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/export"
)

// lengthFlag registers --length, the size of generated keys.
func lengthFlag(f *cmdFlags) *int {
	return f.Int("length", 32, "key length in `bytes`, 16 (R1: 128 bits) to 1024")
}

func checkLength(n int, usage string) error {
	if n < pskstore.MinKeyLen || n > 1024 {
		return cli.UsageError{Msg: fmt.Sprintf("--length must be between %d (R1: 128 bits) and 1024 bytes", pskstore.MinKeyLen), Usage: usage}
	}
	return nil
}

// genCmd adds an identity with a fresh key from crypto/rand (R2).
func genCmd(f *cmdFlags, args []string) error {
	var b bindingFlags
	b.register(f.FlagSet)
	length := lengthFlag(f)
	if _, err := f.parse(args, 0, 0, ""); err != nil {
		return err
	}
	k, err := b.key(f.usage())
	if err == nil {
		err = checkLength(*length, f.usage())
	}
	if err != nil {
		return err
	}
	if k.Secret, err = pskstore.GenerateSecret(*length); err != nil {
		return err
	}
	tag, err := f.put([]pskstore.Key{k}, nil, "")
	if err != nil {
		return err
	}
	printKeyBlock(f.c.Stdout, fmt.Sprintf("%s (%s): shown once, provision the device with it now", plainID(k.Identity), tag(k.Identity)), k)
	return nil
}

// addCmd adds one identity with a key read from stdin or --key-file, or many
// from a CSV file (--from-csv).
func addCmd(f *cmdFlags, args []string) error {
	var b bindingFlags
	b.register(f.FlagSet)
	keyFile := f.String("key-file", "", "read the key from `FILE` instead of stdin")
	format := f.String("key-format", "", "how the key is written: `hex`, base64 or raw (required; never guessed)")
	allowLow := f.Bool("allow-low-entropy", false, "accept a key that fails the entropy screen for this identity (R2; then no psk_ke, no legacy)")
	fromCSV := f.String("from-csv", "", "bulk provisioning from `FILE`, all or nothing (see gateway psk help)")
	if _, err := f.parse(args, 0, 0, ""); err != nil {
		return err
	}
	if *fromCSV != "" {
		var other []string
		f.Visit(func(fl *flag.Flag) {
			if !strings.Contains(" from-csv config store kek-file kek-env tag-key-file insecure-plaintext-keys ", " "+fl.Name+" ") {
				other = append(other, "--"+fl.Name)
			}
		})
		if len(other) > 0 {
			return cli.UsageError{Msg: "--from-csv takes identities, keys and bindings from the file; drop " + strings.Join(other, ", "), Usage: f.usage()}
		}
		return addCSV(f, *fromCSV)
	}
	k, err := b.key(f.usage())
	if err != nil {
		return err
	}
	k.AllowLowEntropy = *allowLow
	if *format != "hex" && *format != "base64" && *format != "raw" {
		return cli.UsageError{Msg: "--key-format hex|base64|raw is required: the format is never guessed (32 hex digits are also 32 raw bytes)", Usage: f.usage()}
	}
	if k.Secret, err = readKey(f.c, *keyFile, *format); err != nil {
		return err
	}
	_, err = f.put([]pskstore.Key{k}, nil, "")
	return err
}

// addCSV adds every row of a CSV file (pskstore/export's format), or none:
// one bad row and nothing is written, with every problem named by line.
func addCSV(f *cmdFlags, path string) error {
	r, err := os.Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	recs, err := export.ReadCSV(r)
	var bad *export.RecordErrors
	if errors.As(err, &bad) {
		var problems []string
		for _, e := range bad.Errs {
			problems = append(problems, e.Error())
		}
		return fmt.Errorf("%s: %d of %d rows refused, nothing written:%s", path, len(bad.Errs), bad.Total, list(problems))
	}
	if err != nil {
		return fmt.Errorf("%s: %w; nothing written", path, err)
	}
	keys := make([]pskstore.Key, len(recs))
	where := func(i int) string { return fmt.Sprintf("line %d", recs[i].Line) }
	var problems []string
	for i, rec := range recs {
		keys[i] = rec.Key
		if rec.Key.Endpoint == "" {
			problems = append(problems, fmt.Sprintf("%s: identity %s: endpoint: empty (L1: the endpoint name the identity may register as)",
				where(i), export.Show(rec.Key.Identity)))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %d of %d rows refused, nothing written:%s", path, len(problems), len(recs), list(problems))
	}
	if _, err := f.put(keys, where, "rows"); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// put adds keys to the store named by the flags, after printing the
// policy's warnings (SHOULD findings); where names key i in messages ("line
// 4"), nil for a single key, and rows what they are (see refused). A
// refusal lists every finding. It returns the store's tagger.
func (f *cmdFlags) put(keys []pskstore.Key, where func(int) string, rows string) (tag func([]byte) string, err error) {
	ks, err := f.open(true, false)
	if err != nil {
		return nil, err
	}
	defer ks.Close()
	var problems []string
	for i, k := range keys {
		if err := f.checkBackend(k); err != nil {
			problems = append(problems, label(keys, i, where)+": "+err.Error())
		}
	}
	switch {
	case len(problems) == 1 && rows == "":
		return nil, errors.New(problems[0][len(label(keys, 0, where))+2:])
	case len(problems) > 0:
		return nil, fmt.Errorf("%d of %d %s refused, nothing written:%s", len(problems), len(keys), rows, list(problems))
	}
	p, err := capability[pskstore.Putter](ks, "add keys")
	if err != nil {
		return nil, err
	}
	ks.warn(f, keys, where)
	if len(keys) > 1 {
		fmt.Fprintf(f.c.Stderr, "writing %d keys to %s, %s\n", len(keys), ks.Where, ks.sealing())
	}
	if bulk, ok := ks.Store.(interface {
		PutMany(ctx context.Context, keys []pskstore.Key, progress func(int)) error
	}); ok && len(keys) > 1 {
		prog := newProgress(f.c.Stderr, "writing keys", len(keys))
		err = bulk.PutMany(ctx(), keys, prog.update)
		if err == nil {
			prog.done()
		}
	} else {
		err = p.Put(ctx(), keys...)
	}
	if err != nil {
		return nil, ks.refused(err, keys, where, rows)
	}
	if len(keys) == 1 {
		fmt.Fprintf(f.c.Stderr, "added identity %s (%s) to %s, %s\n", export.Show(keys[0].Identity), ks.tag(keys[0].Identity), ks.Where, ks.sealing())
	} else {
		fmt.Fprintf(f.c.Stderr, "added %d identities\n", len(keys))
	}
	return ks.tag, nil
}

// warn prints the SHOULD findings of adding keys (R7 look-alike, non-NFC
// identities): against the whole store for a key file, among keys only for
// PostgreSQL, which is not read whole for a warning.
func (ks *Store) warn(f *cmdFlags, keys []pskstore.Key, where func(int) string) {
	var stored []pskstore.Key
	if l, ok := ks.Store.(pskstore.Lister); ok && !ks.Shared {
		stored, _ = l.Keys(ctx())
	}
	for _, w := range pskstore.CheckAdd(stored, keys, ks.Policy).Warnings() {
		fmt.Fprintf(f.c.Stderr, "warning: %s: %v\n", label(keys, w.Index, where), w)
	}
}

// refused explains a refused write: every policy finding, naming the key
// at fault by its place in the input and its identity, and the other key
// of a duplicate the same way. rows names the input's items for a count
// ("rows" of a CSV file); "" for one problem list.
func (ks *Store) refused(err error, keys []pskstore.Key, where func(int) string, rows string) error {
	findings := pskstore.FindingsOf(err).Must()
	if len(findings) == 0 {
		return err
	}
	other := func(j int) string {
		if where != nil {
			return where(j) + " (identity " + export.Show(keys[j].Identity) + ")"
		}
		return "identity " + export.Show(keys[j].Identity)
	}
	var problems []string
	refused := make(map[int]bool)
	for _, pe := range findings {
		msg := fmt.Sprint(pe)
		w := pe.With
		switch {
		case w != nil && pe.Rule == "R7" && w.Index == pskstore.InStore:
			msg = "already exists (rotate replaces its key, revoke removes it)"
		case w != nil && pe.Rule == "R7" && w.Index >= 0 && w.Index < len(keys) && where != nil:
			msg = "given twice, also on " + where(w.Index)
		case w != nil && pe.Rule == "R4" && w.Index >= 0 && w.Index < len(keys):
			msg = "policy R4: same key material as " + other(w.Index) + " (one key, one client and one server)"
		case pe.Rule == "R2" && pe.Field == "Secret":
			msg += " (--allow-low-entropy, or the allow_low_entropy column, accepts it for this identity, never with psk_ke or legacy; better, gateway psk gen makes a random key)"
		}
		refused[pe.Index] = true
		problems = append(problems, label(keys, pe.Index, where)+": "+msg)
	}
	if rows != "" {
		return fmt.Errorf("%d of %d %s refused, nothing written:%s", len(refused), len(keys), rows, list(problems))
	}
	noun := "problem"
	if len(problems) > 1 {
		noun = "problems"
	}
	return fmt.Errorf("%d %s, nothing written:%s", len(problems), noun, list(problems))
}

// label names keys[i]: "line 4: identity "dev-a"", or the identity alone.
func label(keys []pskstore.Key, i int, where func(int) string) string {
	if i < 0 || i >= len(keys) {
		return "a key"
	}
	l := "identity " + export.Show(keys[i].Identity)
	if where != nil {
		l = where(i) + ": " + l
	}
	return l
}

// maxProblems bounds the problems listed when keys are refused.
const maxProblems = 25

// list renders problems one an indented line, at most maxProblems.
func list(problems []string) string {
	if n := len(problems); n > maxProblems {
		problems = append(problems[:maxProblems:maxProblems], fmt.Sprintf("… and %d more", n-maxProblems))
	}
	return "\n  " + strings.Join(problems, "\n  ")
}
