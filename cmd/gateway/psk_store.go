package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// keyFile is the key file a psk command works on: where it is, how it is
// sealed, the policy it is checked with, and its content when read.
type keyFile struct {
	path      string
	kek       *sealed.KEK // nil: plaintext keys
	kekSource string      // "store.kek_file /etc/…", for messages
	plaintext bool        // plaintext keys accepted although kek is set
	policy    pskstore.Options
	cfg       *config.Config // nil with --store

	exists bool
	data   []byte         // content as read, to detect concurrent changes
	keys   []pskstore.Key // in file order
	unlock func()
}

// openMode says what a command does with the key file.
type openMode int

const (
	readOnly  openMode = iota
	readWrite          // the file must exist
	create             // read-write; a missing file is an empty store
)

// open locates the key file from --config or --store, reads and checks it.
// Writers hold a lock on the file's directory until close, so two psk
// commands never interleave their read-modify-write.
func (fs *pskFlagSet) open(mode openMode) (*keyFile, error) {
	kf, err := fs.locate()
	if err != nil {
		return nil, err
	}
	if mode != readOnly {
		unlock, err := lockDir(filepath.Dir(kf.path))
		if err != nil {
			return nil, err
		}
		kf.unlock = unlock
	}
	if err := kf.read(mode == create); err != nil {
		kf.close()
		return nil, err
	}
	return kf, nil
}

// locate resolves where the key file and its KEK are, without reading the
// key file.
func (fs *pskFlagSet) locate() (*keyFile, error) {
	switch {
	case fs.config != "" && fs.store != "":
		return nil, usageError{"give --config or --store, not both"}
	case fs.config == "" && fs.store == "":
		return nil, usageError{"give --config FILE (the gateway's configuration) or --store FILE (a bare key file)"}
	case fs.config != "" && (fs.kekFile != "" || fs.kekEnv != "" || fs.tagKeyFile != "" || fs.plaintext):
		return nil, usageError{"--kek-file, --kek-env, --tag-key-file and --insecure-plaintext-keys go with --store; with --config they come from the configuration"}
	case fs.kekFile != "" && fs.kekEnv != "":
		return nil, usageError{"give --kek-file or --kek-env, not both"}
	}
	if fs.store != "" {
		kf := &keyFile{path: fs.store, plaintext: fs.plaintext}
		tagger, err := newTagger(config.Store{TagKeyFile: fs.tagKeyFile})
		if err != nil {
			return nil, err
		}
		kf.policy.Tagger = tagger
		store := config.Store{KEKFile: fs.kekFile, KEKEnv: fs.kekEnv}
		if kf.kek, err = loadKEK(store); err != nil {
			return nil, err
		}
		kf.kekSource = kekSource(store)
		return kf, nil
	}
	cfg, err := config.Load(fs.config)
	if err != nil {
		return nil, err
	}
	if cfg.Store.Type != config.StoreFile {
		return nil, fmt.Errorf("%s: store.type is %q: only a file store can be administered with gateway psk", fs.config, cfg.Store.Type)
	}
	tagger, err := newTagger(cfg.Store)
	if err != nil {
		return nil, err
	}
	kek, err := loadKEK(cfg.Store)
	if err != nil {
		return nil, err
	}
	return &keyFile{
		path: cfg.Store.Path, kek: kek, kekSource: kekSource(cfg.Store), plaintext: cfg.Store.InsecurePlaintextKeys,
		policy: pskstore.Options{MaxIdentityLen: cfg.DTLS.MaxIdentityLength, Tagger: tagger}, cfg: cfg,
	}, nil
}

func kekSource(s config.Store) string {
	switch {
	case s.KEKFile != "":
		return "kek file " + s.KEKFile
	case s.KEKEnv != "":
		return "kek environment variable " + s.KEKEnv
	}
	return ""
}

// options are the file options of reads and writes.
func (kf *keyFile) options() []file.Option {
	return []file.Option{file.WithPolicy(kf.policy), file.WithKEK(kf.kek), file.WithInsecurePlaintextKeys(kf.plaintext)}
}

func (kf *keyFile) read(mayCreate bool) error {
	data, err := os.ReadFile(kf.path)
	switch {
	case errors.Is(err, os.ErrNotExist) && mayCreate:
		return nil
	case err != nil:
		return err
	}
	kf.exists, kf.data = true, data
	keys, err := file.Parse(data, kf.options()...)
	if err != nil {
		return withPath(err, kf.path)
	}
	kf.keys = keys
	return nil
}

// withPath names path in the *file.ParseError values of err, which Parse
// leaves without one, so each line of the message says which file.
func withPath(err error, path string) error {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var pe *file.ParseError
		if errors.As(e, &pe) && pe.Path == "" {
			pe.Path = path
		}
	}
	return err
}

// save writes keys with file.Save (atomic, mode 0600), sealed when the store
// has a KEK, after checking that nobody changed the file since it was read.
func (kf *keyFile) save(keys []pskstore.Key, opts ...file.Option) error {
	if err := kf.unchanged(); err != nil {
		return err
	}
	if err := file.Save(kf.path, keys, append(kf.options(), opts...)...); err != nil {
		return err
	}
	kf.keys = keys
	return nil
}

func (kf *keyFile) unchanged() error {
	now, err := os.ReadFile(kf.path)
	if errors.Is(err, os.ErrNotExist) && !kf.exists {
		return nil
	}
	if err != nil || !bytes.Equal(now, kf.data) {
		return fmt.Errorf("%s changed while the command ran; nothing written, run it again", kf.path)
	}
	return nil
}

func (kf *keyFile) close() {
	if kf.unlock != nil {
		kf.unlock()
		kf.unlock = nil
	}
}

// find returns the index of identity, or an error naming it (and a near
// miss under case folding, R7).
func (kf *keyFile) find(identity []byte) (int, error) {
	for i, k := range kf.keys {
		if bytes.Equal(k.Identity, identity) {
			return i, nil
		}
	}
	msg := fmt.Sprintf("identity %s not found in %s", showID(identity), kf.path)
	if folded, ok := pskstore.FoldIdentity(identity); ok {
		for _, k := range kf.keys {
			if f, ok := pskstore.FoldIdentity(k.Identity); ok && f == folded {
				msg += fmt.Sprintf(" (did you mean %s? identities are compared byte by byte)", showID(k.Identity))
				break
			}
		}
	}
	return -1, errors.New(msg)
}

func (kf *keyFile) tag(identity []byte) string { return kf.policy.Tagger.Tag(identity) }

// sealing describes how keys are kept at rest, for notes.
func (kf *keyFile) sealing() string {
	if kf.kek == nil {
		return "plaintext at rest (no key-encryption key)"
	}
	return "sealed at rest under kek " + kf.kek.ID()
}

// showID renders an identity for the operator: printable UTF-8 quoted as
// given, anything else as hex:…, so control characters never reach the
// terminal.
func showID(id []byte) string {
	if printableID(id) {
		return strconv.Quote(string(id))
	}
	return "hex:" + hex.EncodeToString(id)
}

// plainID is showID without quotes for text identities, for tables.
func plainID(id []byte) string {
	if printableID(id) {
		return string(id)
	}
	return "hex:" + hex.EncodeToString(id)
}

func printableID(id []byte) bool {
	if len(id) == 0 || !utf8.Valid(id) {
		return false
	}
	for _, r := range string(id) {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// identityArg reads the ID argument of show, revoke, rotate and export: text,
// or hex with --hex.
func identityArg(arg string, isHex bool) ([]byte, error) {
	if !isHex {
		return []byte(arg), nil
	}
	b, err := hex.DecodeString(arg)
	if err != nil || len(b) == 0 {
		return nil, usageError{"--hex: the identity is not valid hex"}
	}
	return b, nil
}

// printFindings writes policy findings, one a line, for the operator.
func printFindings(w io.Writer, prefix string, fs pskstore.Findings) {
	for _, f := range fs {
		fmt.Fprintf(w, "%s%v\n", prefix, f)
	}
}
