package export

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// WriteCSV writes keys as CSV: a header of Columns, then one row a key.
func WriteCSV(w io.Writer, keys []pskstore.Key) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(Columns); err != nil {
		return err
	}
	row := make([]string, len(Columns))
	for _, k := range keys {
		f := fields(k)
		for i, c := range Columns {
			row[i] = f[c]
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// ReadCSV reads a CSV export: a header row naming the columns (any order,
// any subset of Columns and key_base64 with an identity or identity_hex
// and a key_hex or key_base64 column), then one key a row; lines starting
// with # are comments. A problem of the header or of the CSV syntax is an
// error wrapping ErrFormat; rows that do not decode are all reported in a
// *RecordErrors.
func ReadCSV(r io.Reader) ([]Record, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: empty; the first row names the columns (identity,key_hex,endpoint,…)", ErrFormat)
	}
	if err != nil {
		return nil, csvError(err)
	}
	cols := make(map[string]int, len(header))
	known := append(slices.Clone(Columns), "key_base64")
	for i, name := range header {
		name = strings.ToLower(strings.TrimSpace(name))
		line, _ := cr.FieldPos(i)
		switch _, dup := cols[name]; {
		case !slices.Contains(known, name):
			return nil, fmt.Errorf("%w: line %d, column %d: unknown column (name not repeated: it may be a key); "+
				"the first row must name the columns, from: %s, key_base64", ErrFormat, line, i+1, strings.Join(Columns, ", "))
		case dup:
			return nil, fmt.Errorf("%w: column %s given twice", ErrFormat, name)
		}
		cols[name] = i
	}
	for _, pair := range [][2]string{{"identity", "identity_hex"}, {"key_hex", "key_base64"}} {
		_, a := cols[pair[0]]
		_, b := cols[pair[1]]
		if !a && !b {
			return nil, fmt.Errorf("%w: the header needs a %s or %s column", ErrFormat, pair[0], pair[1])
		}
	}
	var recs []Record
	bad := &RecordErrors{}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvError(err)
		}
		if bad.Total++; bad.Total > MaxRecords {
			return nil, fmt.Errorf("%w: more than %d rows; split the file", ErrFormat, MaxRecords)
		}
		line, _ := cr.FieldPos(0)
		k, err := key(func(name string) string {
			if i, ok := cols[name]; ok {
				return strings.TrimSpace(rec[i])
			}
			return ""
		})
		if err != nil {
			bad.Errs = append(bad.Errs, &RecordError{Line: line, Identity: k.Identity, Err: err})
			continue
		}
		recs = append(recs, Record{Line: line, Key: k})
	}
	switch {
	case len(bad.Errs) > 0:
		return nil, bad
	case bad.Total == 0:
		return nil, fmt.Errorf("%w: no rows after the header", ErrFormat)
	}
	return recs, nil
}

// csvError keeps the position of a CSV syntax error and drops anything
// that could quote the content.
func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%w: line %d, column %d: %w", ErrFormat, pe.Line, pe.Column, pe.Err)
	}
	return fmt.Errorf("%w: %w", ErrFormat, err)
}
