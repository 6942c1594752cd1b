package main

import (
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// csvColumns are the columns add --from-csv knows, in the order export
// writes them.
var csvColumns = []string{"identity", "identity_hex", "key_hex", "key_base64", "hash", "endpoint",
	"server_name", "backend", "versions", "modes", "legacy", "allow_low_entropy"}

// maxCSVRows bounds one bulk provisioning run.
const maxCSVRows = 1_000_000

type csvRow struct {
	line   int
	fields []string
}

// addCSV adds every row of a CSV file, or none: one bad row and nothing is
// written, with every problem named by line (and identity when known).
func addCSV(c *pskContext, fs *pskFlagSet, path string) error {
	cols, rows, err := readCSV(path)
	if err != nil {
		return err
	}
	ks, err := fs.open(create)
	if err != nil {
		return err
	}
	defer ks.close()

	prog := newProgress(c.stderr, "checking rows", len(rows))
	keys := make([]pskstore.Key, 0, len(rows))
	lines := make([]int, 0, len(rows))
	var problems []string
	for i, row := range rows {
		k, err := row.key(cols)
		if err == nil {
			err = ks.checkBackend(k)
		}
		if err == nil {
			err = pskstore.CheckKey(k, ks.policy).Err()
		}
		if err != nil {
			problems = append(problems, row.where(k)+": "+err.Error())
		} else {
			keys = append(keys, k)
			lines = append(lines, row.line)
		}
		prog.update(i + 1)
	}
	prog.done()
	if len(problems) > 0 {
		n := len(problems)
		if n > maxProblems {
			problems = append(problems[:maxProblems], fmt.Sprintf("… and %d more", n-maxProblems))
		}
		return fmt.Errorf("%s: %d of %d rows refused, nothing written:\n  %s", path, n, len(rows), strings.Join(problems, "\n  "))
	}
	where := func(i int) string { return fmt.Sprintf("line %d", lines[i]) }
	loaded, err := ks.admin.loaded(c.ctx)
	if err != nil {
		return err
	}
	if err := ks.checkNew(c, loaded, keys, where); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Fprintf(c.stderr, "writing %d keys to %s, %s\n", len(keys), ks.where(), ks.sealing())
	wrote := newProgress(c.stderr, "writing keys", len(keys))
	if err := ks.admin.add(c.ctx, keys, wrote.update); err != nil {
		return fmt.Errorf("%s: %w", path, storeError(err, keys, where))
	}
	if ks.shared {
		wrote.done() // the database reports progress; a file is written at once
	}
	fmt.Fprintf(c.stderr, "added %d identities from %s\n", len(keys), path)
	return nil
}

// readCSV reads the header and every row. Errors name lines and columns,
// never cell contents: a cell may be a key.
func readCSV(path string) (map[string]int, []csvRow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comment = '#'
	r.TrimLeadingSpace = true
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("%s: empty; the first row names the columns (identity,key_hex,endpoint,…)", path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, csvError(err))
	}
	cols := make(map[string]int, len(header))
	for i, name := range header {
		name = strings.ToLower(strings.TrimSpace(name))
		switch {
		case !slices.Contains(csvColumns, name):
			line, _ := r.FieldPos(i)
			return nil, nil, fmt.Errorf("%s: line %d, column %d: unknown column (name not repeated: it may be a key); "+
				"the first row must name the columns, from: %s", path, line, i+1, strings.Join(csvColumns, ", "))
		case has(cols, name):
			return nil, nil, fmt.Errorf("%s: column %s given twice", path, name)
		}
		cols[name] = i
	}
	for _, pair := range [][2]string{{"identity", "identity_hex"}, {"key_hex", "key_base64"}} {
		if !has(cols, pair[0]) && !has(cols, pair[1]) {
			return nil, nil, fmt.Errorf("%s: the header needs a %s or %s column", path, pair[0], pair[1])
		}
	}
	if !has(cols, "endpoint") {
		return nil, nil, fmt.Errorf("%s: the header needs an endpoint column (L1)", path)
	}
	var rows []csvRow
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w; nothing written", path, csvError(err))
		}
		if len(rows) == maxCSVRows {
			return nil, nil, fmt.Errorf("%s: more than %d rows; split the file", path, maxCSVRows)
		}
		line, _ := r.FieldPos(0)
		rows = append(rows, csvRow{line: line, fields: rec})
	}
	if len(rows) == 0 {
		return nil, nil, fmt.Errorf("%s: no rows after the header", path)
	}
	return cols, rows, nil
}

func has(cols map[string]int, name string) bool { _, ok := cols[name]; return ok }

// csvError keeps the position of a CSV syntax error and drops anything that
// could quote the content.
func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("line %d, column %d: %w", pe.Line, pe.Column, pe.Err)
	}
	return err
}

// where names the row for messages: its line and, once known, identity.
func (r csvRow) where(k pskstore.Key) string {
	if len(k.Identity) > 0 {
		return fmt.Sprintf("line %d: identity %s", r.line, showID(k.Identity))
	}
	return fmt.Sprintf("line %d", r.line)
}

// key decodes one row. Errors name the column, never its content, except
// for identities, which the operator's own tool shows as given.
func (r csvRow) key(cols map[string]int) (pskstore.Key, error) {
	var k pskstore.Key
	get := func(name string) string {
		if i, ok := cols[name]; ok {
			return strings.TrimSpace(r.fields[i])
		}
		return ""
	}
	id, idHex := get("identity"), get("identity_hex")
	switch {
	case id != "" && idHex != "":
		return k, errors.New("give identity or identity_hex, not both")
	case id != "":
		k.Identity = []byte(id)
	case idHex != "":
		b, err := hex.DecodeString(idHex)
		if err != nil {
			return k, errors.New("identity_hex: not valid hex")
		}
		k.Identity = b
	default:
		return k, errors.New("no identity")
	}
	kh, kb := get("key_hex"), get("key_base64")
	var err error
	switch {
	case kh != "" && kb != "":
		return k, errors.New("give key_hex or key_base64, not both")
	case kh != "":
		if k.Secret, err = hex.DecodeString(kh); err != nil {
			return k, errors.New("key_hex: not valid hex (not shown)")
		}
	case kb != "":
		if k.Secret, err = base64.StdEncoding.Strict().DecodeString(kb); err != nil {
			return k, errors.New("key_base64: not valid base64 (not shown)")
		}
	default:
		return k, errors.New("no key")
	}
	if k.Endpoint = get("endpoint"); k.Endpoint == "" {
		return k, errors.New("endpoint: empty (L1: the endpoint name the identity may register as)")
	}
	k.ServerName, k.Backend = get("server_name"), get("backend")
	if k.Hash, err = parseHash(get("hash")); err != nil {
		return k, fmt.Errorf("hash: %w", err)
	}
	if k.Versions, err = parseVersions(get("versions")); err != nil {
		return k, fmt.Errorf("versions: %w", err)
	}
	if k.Modes, err = parseModes(get("modes")); err != nil {
		return k, fmt.Errorf("modes: %w", err)
	}
	for _, b := range []struct {
		name string
		v    *bool
	}{{"legacy", &k.Legacy}, {"allow_low_entropy", &k.AllowLowEntropy}} {
		switch strings.ToLower(get(b.name)) {
		case "", "false":
		case "true":
			*b.v = true
		default:
			return k, fmt.Errorf("%s: must be true, false or empty", b.name)
		}
	}
	k.Normalize()
	return k, nil
}

// progress reports how far a long run is, on stderr: a bar redrawn in
// place on a terminal, otherwise a plain line at every tenth.
type progress struct {
	w     io.Writer
	tty   bool
	label string
	total int
	last  time.Time
	tenth int // the last tenth reported on plain output
}

func newProgress(w io.Writer, label string, total int) *progress {
	return &progress{w: w, tty: isTerminal(w), label: label, total: total}
}

func (p *progress) update(n int) {
	if p.tty {
		if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond {
			p.last = now
			p.draw(n)
		}
		return
	}
	if t := n * 10 / p.total; t > p.tenth && n < p.total {
		p.tenth = t
		fmt.Fprintf(p.w, "%s: %d/%d (%d%%)\n", p.label, n, p.total, n*100/p.total)
	}
}

func (p *progress) draw(n int) {
	const width = 30
	filled := n * width / p.total
	fmt.Fprintf(p.w, "\r%s [%s%s] %d/%d", p.label, strings.Repeat("#", filled), strings.Repeat(".", width-filled), n, p.total)
}

func (p *progress) done() {
	if p.tty {
		p.draw(p.total)
		fmt.Fprintln(p.w)
		return
	}
	fmt.Fprintf(p.w, "%s: %d/%d (100%%)\n", p.label, p.total, p.total)
}
