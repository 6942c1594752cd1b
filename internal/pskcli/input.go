package pskcli

import (
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/lwm2m-gateway/gateway/internal/cli"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/export"
)

// bindingFlags are the flags that describe an identity and what it is bound
// to, shared by gen and add.
type bindingFlags struct {
	identity, identityHex, endpoint, serverName, backend string
	hash                                                 pskstore.Hash
	versions                                             pskstore.Versions
	modes                                                pskstore.Modes
	legacy                                               bool
}

func (b *bindingFlags) register(fs *flag.FlagSet) {
	b.hash, b.versions, b.modes = pskstore.Hash(crypto.SHA256), pskstore.DTLS13|pskstore.DTLS12, pskstore.ModeDHE
	fs.StringVar(&b.identity, "identity", "", "PSK `identity` as text")
	fs.StringVar(&b.identityHex, "identity-hex", "", "PSK identity in `hex`, for binary identities")
	fs.StringVar(&b.endpoint, "endpoint", "", "LwM2M `endpoint` name the identity may register as (L1)")
	fs.StringVar(&b.serverName, "server-name", "", "`SNI` the identity is bound to (R5); empty: unbound")
	fs.StringVar(&b.backend, "backend", "", "backend `name`; empty: the default backend")
	fs.TextVar(&b.hash, "hash", b.hash, "DTLS 1.3 PSK `hash`: sha256 or sha384")
	fs.Func("versions", "DTLS `versions` allowed, comma-separated (default 1.3,1.2)", listFlag(&b.versions, "version", "1.3 and/or 1.2"))
	fs.Func("modes", "DTLS 1.3 key-exchange `modes`, comma-separated; psk_ke only if listed, R3 (default psk_dhe_ke)", listFlag(&b.modes, "mode", "psk_dhe_ke and/or psk_ke"))
	fs.BoolVar(&b.legacy, "legacy", false, "allow DTLS 1.2 plain-PSK suites without ECDHE (R3)")
}

// listFlag parses a list flag into v with pskstore's text form, naming the
// item at fault (flags are not keys).
func listFlag(v interface{ UnmarshalText([]byte) error }, what, valid string) func(string) error {
	return func(s string) error {
		for _, item := range strings.Split(export.List(s), ",") {
			if err := v.UnmarshalText([]byte(item)); err != nil || item == "" {
				return fmt.Errorf("unknown %s %q, use %s", what, item, valid)
			}
		}
		return v.UnmarshalText([]byte(export.List(s)))
	}
}

// key builds the key the flags describe, without key material.
func (b *bindingFlags) key(usage string) (pskstore.Key, error) {
	id, err := identityFlags(b.identity, b.identityHex, usage)
	if err != nil {
		return pskstore.Key{}, err
	}
	if b.endpoint == "" {
		return pskstore.Key{}, cli.UsageError{Msg: "--endpoint is required: the LwM2M endpoint name the identity may register as (L1)", Usage: usage}
	}
	return pskstore.Key{Identity: id, Endpoint: b.endpoint, ServerName: b.serverName, Backend: b.backend, Hash: crypto.Hash(b.hash),
		Versions: b.versions, Modes: b.modes, Legacy: b.legacy}, nil
}

// identityFlags reads an identity given as --identity TEXT or
// --identity-hex HEX.
func identityFlags(text, hexText, usage string) ([]byte, error) {
	switch {
	case text != "" && hexText != "":
		return nil, cli.UsageError{Msg: "give --identity or --identity-hex, not both", Usage: usage}
	case text != "":
		return []byte(text), nil
	case hexText != "":
		id, err := hexID(hexText)
		if err != nil {
			return nil, cli.UsageError{Msg: "--identity-hex is not valid hex", Usage: usage}
		}
		return id, nil
	}
	return nil, cli.UsageError{Msg: "--identity ID (or --identity-hex HEX) is required", Usage: usage}
}

func hexID(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err == nil && len(b) == 0 {
		err = errors.New("empty")
	}
	return b, err
}

// checkBackend refuses a backend the gateway's configuration does not
// declare (with --store there is nothing to check against).
func (f *cmdFlags) checkBackend(k pskstore.Key) error {
	if f.cfg == nil || k.Backend == "" {
		return nil
	}
	if _, ok := f.cfg.Backends[k.Backend]; !ok {
		return fmt.Errorf("backend %q is not declared in the configuration (declared: %s)", k.Backend, strings.Join(f.cfg.BackendNames(), ", "))
	}
	return nil
}

// maxKeyInput bounds the key input read from stdin or --key-file.
const maxKeyInput = 64 << 10

// readKey reads key material from path, or stdin when path is empty, in the
// format given. Errors never show what was read.
func readKey(c cli.IO, path, format string) (pskstore.Secret, error) {
	r, src := c.Stdin, "stdin"
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("--key-file: %w", err)
		}
		defer f.Close()
		r, src = f, path
	} else if isTerminal(c.Stdin) {
		return nil, cli.UsageError{Msg: "stdin is a terminal (or another device), where the key would be echoed: pipe it in (gateway psk add … < key.hex) or use --key-file"}
	}
	data, err := io.ReadAll(io.LimitReader(r, maxKeyInput+1))
	if err != nil {
		return nil, fmt.Errorf("reading the key from %s: %w", src, err)
	}
	if len(data) > maxKeyInput {
		return nil, fmt.Errorf("the key in %s is larger than %d bytes", src, maxKeyInput)
	}
	key, text := data, strings.TrimSpace(string(data))
	switch format {
	case "hex":
		if key, err = hex.DecodeString(text); err != nil {
			return nil, fmt.Errorf("the key in %s is not valid hex (%d characters, not shown)", src, len(text))
		}
	case "base64":
		if key, err = base64.StdEncoding.Strict().DecodeString(text); err != nil {
			if key, err = base64.RawStdEncoding.Strict().DecodeString(text); err != nil {
				return nil, fmt.Errorf("the key in %s is not valid base64 (%d characters, not shown)", src, len(text))
			}
		}
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("no key read from %s", src)
	}
	return pskstore.Secret(key), nil
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	fi, err := file.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
