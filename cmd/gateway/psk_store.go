package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// keyFile is the key file backend of the psk commands: where the file
// is, how it is read and written, and its content when read. Writers hold
// a lock on the file's directory until close, so two psk commands never
// interleave their read-modify-write.
type keyFile struct {
	ks   *keyStore // the policy, KEK and plaintext choice of reads and writes
	path string

	exists  bool
	data    []byte         // content as read, to detect concurrent changes
	keys    []pskstore.Key // in file order
	loadErr error          // why the file does not load (audit mode only)
	unlock  func()
}

var _ storeAdmin = (*keyFile)(nil)

// openMode says what a command does with the key store.
type openMode int

const (
	readOnly  openMode = iota
	readWrite          // the file must exist
	create             // read-write; a missing file is an empty store
	// auditing reads a store that may not load: its errors are reported
	// by keys, for audit to list, rather than by open.
	auditing
	// rekeying reads and writes, accepting plaintext keys although the
	// store has a KEK: rekey is also how a plaintext store gets sealed.
	rekeying
)

// open locates the key store from --config or --store and opens it: the
// key file, read and checked, or the PostgreSQL database.
func (fs *pskFlagSet) open(mode openMode) (*keyStore, error) {
	ks, err := fs.locate()
	if err != nil {
		return nil, err
	}
	if mode == rekeying {
		ks.plaintext = true
	}
	if ks.cfg != nil && ks.cfg.Store.Type == config.StorePostgres {
		if err := ks.openPostgres(mode); err != nil {
			return nil, err
		}
		return ks, nil
	}
	path := fs.store
	if ks.cfg != nil {
		path = ks.cfg.Store.Path
	}
	kf := &keyFile{ks: ks, path: path}
	ks.admin = kf
	if mode != readOnly && mode != auditing {
		unlock, err := lockDir(filepath.Dir(kf.path))
		if err != nil {
			return nil, err
		}
		kf.unlock = unlock
	}
	if err := kf.read(mode == create); err != nil {
		if mode != auditing || !kf.exists {
			kf.close()
			return nil, err
		}
		kf.loadErr = err
	}
	return ks, nil
}

// locate resolves where the key store and its KEK are, without reading
// the store.
func (fs *pskFlagSet) locate() (*keyStore, error) {
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
		ks := &keyStore{plaintext: fs.plaintext}
		tagger, err := newTagger(config.Store{TagKeyFile: fs.tagKeyFile})
		if err != nil {
			return nil, err
		}
		ks.policy.Tagger = tagger
		store := config.Store{KEKFile: fs.kekFile, KEKEnv: fs.kekEnv}
		if ks.kek, err = loadKEK(store); err != nil {
			return nil, err
		}
		ks.kekSource = kekSource(store)
		return ks, nil
	}
	cfg, err := config.Load(fs.config)
	if err != nil {
		return nil, err
	}
	if cfg.Store.Type != config.StoreFile && cfg.Store.Type != config.StorePostgres {
		return nil, fmt.Errorf("%s: store.type is %q: gateway psk administers a file or postgres store", fs.config, cfg.Store.Type)
	}
	tagger, err := newTagger(cfg.Store)
	if err != nil {
		return nil, err
	}
	kek, err := loadKEK(cfg.Store)
	if err != nil {
		return nil, err
	}
	return &keyStore{
		kek: kek, kekSource: kekSource(cfg.Store), plaintext: cfg.Store.InsecurePlaintextKeys,
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
	return []file.Option{file.WithPolicy(kf.ks.policy), file.WithKEK(kf.ks.kek), file.WithInsecurePlaintextKeys(kf.ks.plaintext)}
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

func (kf *keyFile) where() string { return kf.path }

func (kf *keyFile) list(context.Context) ([]pskstore.Key, error) { return kf.keys, kf.loadErr }

func (kf *keyFile) loaded(context.Context) ([]pskstore.Key, error) { return kf.keys, kf.loadErr }

// index returns the position of identity, or -1.
func (kf *keyFile) index(identity []byte) int {
	return slices.IndexFunc(kf.keys, func(k pskstore.Key) bool { return bytes.Equal(k.Identity, identity) })
}

func (kf *keyFile) get(_ context.Context, identity []byte) (pskstore.Key, error) {
	if kf.loadErr != nil {
		return pskstore.Key{}, kf.loadErr
	}
	i := kf.index(identity)
	if i < 0 {
		return pskstore.Key{}, pskstore.ErrUnknownIdentity
	}
	return kf.keys[i], nil
}

func (kf *keyFile) add(_ context.Context, keys []pskstore.Key, _ func(int)) error {
	return kf.save(slices.Concat(kf.keys, keys))
}

func (kf *keyFile) rotate(_ context.Context, k pskstore.Key) error {
	i := kf.index(k.Identity)
	if i < 0 {
		return pskstore.ErrUnknownIdentity
	}
	keys := slices.Clone(kf.keys)
	keys[i] = k
	return kf.save(keys)
}

func (kf *keyFile) revoke(_ context.Context, identity []byte) error {
	i := kf.index(identity)
	if i < 0 {
		return pskstore.ErrUnknownIdentity
	}
	return kf.save(slices.Delete(slices.Clone(kf.keys), i, i+1))
}

func (kf *keyFile) replace(_ context.Context, identity []byte, keys []pskstore.Key) error {
	i := kf.index(identity)
	if i < 0 {
		return pskstore.ErrUnknownIdentity
	}
	return kf.save(slices.Insert(slices.Delete(slices.Clone(kf.keys), i, i+1), i, keys...))
}

// rekey checks the round trip under kek before touching the file, then
// writes it, atomically; on any failure the file is left as it was.
func (kf *keyFile) rekey(_ context.Context, kek *sealed.KEK) (int, error) {
	opts := []file.Option{file.WithPolicy(kf.ks.policy), file.WithKEK(kek)}
	data, err := file.Marshal(kf.keys, opts...)
	if err != nil {
		return 0, err
	}
	back, err := file.Parse(data, opts...)
	if err != nil {
		return 0, fmt.Errorf("the re-sealed store does not load, nothing written: %w", err)
	}
	for i := range kf.keys {
		want := kf.keys[i].Clone()
		want.Normalize()
		if i >= len(back) || !back[i].Equal(want) {
			return 0, fmt.Errorf("keys[%d] changed when re-sealed, nothing written", i)
		}
	}
	if err := kf.save(kf.keys, file.WithKEK(kek)); err != nil {
		return 0, err
	}
	return len(kf.keys), nil
}

// plaintext returns the identities of the entries whose key is written in
// plaintext (key_hex, key_base64).
func (kf *keyFile) plaintext(context.Context) (map[string]bool, error) {
	out := make(map[string]bool)
	for i := range kf.plaintextEntries() {
		if i < len(kf.keys) {
			out[string(kf.keys[i].Identity)] = true
		}
	}
	return out, nil
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
