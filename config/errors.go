package config

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// FieldError is one problem with one field of the configuration.
type FieldError struct {
	// Field is the dotted path of the field, as written in the file:
	// "dtls.mtu", "listeners[1].address", "backends.dm.address". Empty for a
	// problem of the file as a whole (YAML syntax, several documents).
	Field string
	// Value is the offending value as written, empty when the field is
	// missing or empty.
	Value string
	// Msg says what is wrong, in lowercase.
	Msg string
	// Line is the 1-based line in the file, 0 when unknown (Validate of a
	// Config built in code, or a field absent from the file).
	Line int
}

// Error formats the error as `line 12: dtls.mtu "100": must be ...`.
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		if e.Value != "" {
			b.WriteString(" ")
			b.WriteString(strconv.Quote(e.Value))
		}
		b.WriteString(": ")
	} else if e.Value != "" {
		b.WriteString(strconv.Quote(e.Value))
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// FieldErrors is every problem found in a configuration, in file order, so an
// operator can fix the file in one go. errors.As finds each *FieldError.
type FieldErrors []*FieldError

// Error lists the errors, one per line after the first.
func (es FieldErrors) Error() string {
	switch len(es) {
	case 0:
		return "no errors"
	case 1:
		return es[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d errors:", len(es))
	for _, e := range es {
		b.WriteString("\n\t")
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the errors for errors.Is and errors.As.
func (es FieldErrors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// err returns es as an error, or nil when empty (never a typed nil).
func (es FieldErrors) err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// sort orders es by line, errors without a line last, keeping the order of
// errors on the same line.
func (es FieldErrors) sort() {
	slices.SortStableFunc(es, func(a, b *FieldError) int {
		switch {
		case a.Line == b.Line:
			return 0
		case a.Line == 0:
			return 1
		case b.Line == 0:
			return -1
		}
		return cmp.Compare(a.Line, b.Line)
	})
}

// add appends a FieldError built from a message format.
func (es *FieldErrors) add(field, value, format string, args ...any) {
	*es = append(*es, &FieldError{Field: field, Value: value, Msg: fmt.Sprintf(format, args...)})
}
