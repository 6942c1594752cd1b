package main

import (
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// maxKeyInput bounds the key input read from stdin or --key-file.
const maxKeyInput = 64 << 10

// pskAdd adds one identity with a key read from stdin or --key-file, or many
// from a CSV file (--from-csv).
func pskAdd(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	var b bindingFlags
	b.register(fs.FlagSet)
	keyFile := fs.String("key-file", "", "read the key from `FILE` instead of stdin")
	format := fs.String("key-format", "", "how the key is written: `hex`, base64 or raw (required; never guessed)")
	allowLow := fs.Bool("allow-low-entropy", false, "accept a key that fails the entropy screen for this identity (R2; then no psk_ke, no legacy)")
	fromCSV := fs.String("from-csv", "", "bulk provisioning from `FILE`, all or nothing (see gateway psk help)")
	if err := fs.parseNone(args); err != nil {
		return err
	}
	if *fromCSV != "" {
		var other []string
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "from-csv", "config", "store", "kek-file", "kek-env", "tag-key-file", "insecure-plaintext-keys":
			default:
				other = append(other, "--"+f.Name)
			}
		})
		if len(other) > 0 {
			return usageError{"--from-csv takes identities, keys and bindings from the file; drop " + strings.Join(other, ", ")}
		}
		return addCSV(c, fs, *fromCSV)
	}
	k, err := b.key()
	if err != nil {
		return err
	}
	k.AllowLowEntropy = *allowLow
	if *format == "" {
		return usageError{"--key-format hex|base64|raw is required: the format is never guessed (32 hex digits are also 32 raw bytes)"}
	}
	if *format != "hex" && *format != "base64" && *format != "raw" {
		return usageError{fmt.Sprintf("--key-format %q: use hex, base64 or raw", *format)}
	}
	ks, err := fs.open(create)
	if err != nil {
		return err
	}
	defer ks.close()
	if err := ks.checkBackend(k); err != nil {
		return err
	}
	if k.Secret, err = readKey(c, *keyFile, *format); err != nil {
		return err
	}
	loaded, err := ks.admin.loaded(c.ctx)
	if err != nil {
		return err
	}
	if err := ks.checkNew(c, loaded, []pskstore.Key{k}, nil); err != nil {
		return err
	}
	if err := ks.admin.add(c.ctx, []pskstore.Key{k}, nil); err != nil {
		return storeError(err, []pskstore.Key{k}, nil)
	}
	fmt.Fprintf(c.stderr, "added identity %s (%s) to %s, %s\n", showID(k.Identity), ks.tag(k.Identity), ks.where(), ks.sealing())
	return nil
}

// readKey reads key material from path, or stdin when path is empty, in the
// format given. Errors never show what was read.
func readKey(c *pskContext, path, format string) (pskstore.Secret, error) {
	var r io.Reader
	src := "stdin"
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("--key-file: %w", err)
		}
		defer f.Close()
		r, src = f, path
	} else {
		if isTerminal(c.stdin) {
			return nil, usageError{"stdin is a terminal (or another device), where the key would be echoed: pipe it in (gateway psk add … < key.hex) or use --key-file"}
		}
		r = c.stdin
	}
	data, err := io.ReadAll(io.LimitReader(r, maxKeyInput+1))
	if err != nil {
		return nil, fmt.Errorf("reading the key from %s: %w", src, err)
	}
	if len(data) > maxKeyInput {
		return nil, fmt.Errorf("the key in %s is larger than %d bytes", src, maxKeyInput)
	}
	var key []byte
	switch format {
	case "raw":
		key = data
	case "hex":
		s := strings.TrimSpace(string(data))
		if key, err = hex.DecodeString(s); err != nil {
			return nil, fmt.Errorf("the key in %s is not valid hex (%d characters, not shown)", src, len(s))
		}
	case "base64":
		s := strings.TrimSpace(string(data))
		if key, err = base64.StdEncoding.Strict().DecodeString(s); err != nil {
			if key, err = base64.RawStdEncoding.Strict().DecodeString(s); err != nil {
				return nil, fmt.Errorf("the key in %s is not valid base64 (%d characters, not shown)", src, len(s))
			}
		}
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("%w from %s", errNoKey, src)
	}
	return pskstore.Secret(key), nil
}
