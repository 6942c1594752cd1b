package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"
)

const synopsis = "usage: tool [--n N] ARG...\n"

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		pos     []string
		n       int
		err     string // "" for none
		stdout  string // printed by --help
		isUsage bool
	}{
		{name: "flags first", args: []string{"--n", "3", "a", "b"}, pos: []string{"a", "b"}, n: 3},
		{name: "flags after positional arguments", args: []string{"a", "--n", "3", "b"}, pos: []string{"a", "b"}, n: 3},
		{name: "-- ends the flags", args: []string{"a", "--", "--n", "3"}, pos: []string{"a", "--n", "3"}},
		{name: "no arguments", args: nil, pos: nil},
		{name: "--help", args: []string{"a", "--help"}, err: flag.ErrHelp.Error(), stdout: synopsis + "\nflags:\n  -n N"},
		{name: "bad flag is a usage error", args: []string{"--bogus"}, err: "flag provided but not defined: -bogus", isUsage: true},
		{name: "bad value is a usage error", args: []string{"--n", "x"}, err: `invalid value "x" for flag -n`, isUsage: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := NewFlags("tool")
			n := fs.Int("n", 0, "`N` things")
			var out bytes.Buffer
			pos, err := Parse(fs, IO{Stdout: &out}, synopsis, tt.args)
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("error %v, want %q", err, tt.err)
			}
			var ue UsageError
			if errors.As(err, &ue) != tt.isUsage || (tt.isUsage && !strings.HasPrefix(ue.Usage, synopsis+"\nflags:\n")) {
				t.Errorf("usage error %v (%+v), want one: %v, carrying the synopsis and flags", err, ue, tt.isUsage)
			}
			if tt.err == "" && (!slices.Equal(pos, tt.pos) || *n != tt.n) {
				t.Errorf("positional %q, n %d; want %q, %d", pos, *n, tt.pos, tt.n)
			}
			if !strings.HasPrefix(out.String(), tt.stdout) || (tt.stdout == "" && out.Len() > 0) {
				t.Errorf("stdout %q, want %q", out.String(), tt.stdout)
			}
		})
	}
}

func TestUsageWithoutFlags(t *testing.T) {
	if got := Usage(NewFlags("tool"), synopsis); got != synopsis {
		t.Errorf("usage %q, want the synopsis alone", got)
	}
}

// TestPositionalNeverEchoes: a stray argument may be a key (R9), so the
// error counts the arguments and never repeats them.
func TestPositionalNeverEchoes(t *testing.T) {
	const key = "8a1355e09107c42b6df839ae0277b54c"
	if err := Positional([]string{"id", key}, 1, 1, "ID", synopsis); err == nil || strings.Contains(err.Error(), key) ||
		err.Error() != "1 unexpected arguments (not repeated here: one may be a key)" {
		t.Errorf("error %v", err)
	}
	var ue UsageError
	if err := Positional(nil, 1, 1, "ID", synopsis); !errors.As(err, &ue) || ue.Msg != "missing ID" || ue.Usage != synopsis {
		t.Errorf("error %#v", err)
	}
	if err := Positional([]string{"id"}, 1, 1, "ID", synopsis); err != nil {
		t.Errorf("error %v", err)
	}
}

func TestExit(t *testing.T) {
	for _, tt := range []struct {
		name   string
		err    error
		code   int
		stderr string
	}{
		{"success", nil, 0, ""},
		{"help was printed", fmt.Errorf("list: %w", flag.ErrHelp), 0, ""},
		{"failure", errors.New("no such file"), 1, "gateway psk: no such file\n"},
		{"usage error, wrapped", fmt.Errorf("gen: %w", UsageError{"missing ID", "\nusage: tool\n"}), ExitUsage, "gateway psk: gen: missing ID\nusage: tool\n"},
		{"usage error without a usage", UsageError{Msg: "stdin is a terminal"}, ExitUsage, "gateway psk: stdin is a terminal\n"},
	} {
		var stderr bytes.Buffer
		if code := Exit(&stderr, "gateway psk", tt.err); code != tt.code || stderr.String() != tt.stderr {
			t.Errorf("%s: exit %d, stderr %q; want %d, %q", tt.name, code, stderr.String(), tt.code, tt.stderr)
		}
	}
}
