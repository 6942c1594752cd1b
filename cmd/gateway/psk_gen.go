package main

import (
	"fmt"
	"slices"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// pskGen adds an identity with a fresh key from crypto/rand (R2).
func pskGen(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	var b bindingFlags
	b.register(fs.FlagSet)
	length := fs.Int("length", 32, "key length in `bytes`, at least 16 (R1)")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := positional(pos, 0, 0, ""); err != nil {
		return err
	}
	k, err := b.key()
	if err != nil {
		return err
	}
	if *length < pskstore.MinKeyLen || *length > 1024 {
		return usageError{fmt.Sprintf("--length must be between %d (R1: 128 bits) and 1024 bytes", pskstore.MinKeyLen)}
	}
	kf, err := fs.open(create)
	if err != nil {
		return err
	}
	defer kf.close()
	if err := kf.checkBackend(k); err != nil {
		return err
	}
	if k.Secret, err = pskstore.GenerateSecret(*length); err != nil {
		return err
	}
	warnings, err := checkNew(kf.policy, kf.keys, []pskstore.Key{k}, nil)
	printWarnings(c.stderr, warnings)
	if err != nil {
		return err
	}
	if err := kf.save(append(slices.Clone(kf.keys), k)); err != nil {
		return err
	}
	printKeyBlock(c.stdout, fmt.Sprintf("%s (%s): shown once, provision the device with it now", plainID(k.Identity), kf.tag(k.Identity)), k)
	fmt.Fprintf(c.stderr, "added identity %s (%s) to %s, %s\n", showID(k.Identity), kf.tag(k.Identity), kf.path, kf.sealing())
	return nil
}

// pskRotate gives an identity a fresh random key and keeps its bindings. The
// gateway closes the identity's sessions when it reloads the file (R10).
func pskRotate(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	isHex := fs.Bool("hex", false, "the ID argument is hex")
	length := fs.Int("length", 32, "key length in `bytes`, at least 16 (R1)")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := positional(pos, 1, 1, "identity: rotate ID"); err != nil {
		return err
	}
	id, err := identityArg(pos[0], *isHex)
	if err != nil {
		return err
	}
	if *length < pskstore.MinKeyLen || *length > 1024 {
		return usageError{fmt.Sprintf("--length must be between %d (R1: 128 bits) and 1024 bytes", pskstore.MinKeyLen)}
	}
	kf, err := fs.open(readWrite)
	if err != nil {
		return err
	}
	defer kf.close()
	i, err := kf.find(id)
	if err != nil {
		return err
	}
	k := kf.keys[i].Clone()
	if k.ImportContext != nil {
		return fmt.Errorf("identity %s is an imported key (R6): its key derives from an external PSK that was deleted; revoke it and import a new external PSK instead", showID(id))
	}
	if k.Secret, err = pskstore.GenerateSecret(*length); err != nil {
		return err
	}
	k.AllowLowEntropy = false // a generated key passes the screen (R2)
	others := slices.Delete(slices.Clone(kf.keys), i, i+1)
	warnings, err := checkNew(kf.policy, others, []pskstore.Key{k}, nil)
	printWarnings(c.stderr, warnings)
	if err != nil {
		return err
	}
	keys := slices.Clone(kf.keys)
	keys[i] = k
	if err := kf.save(keys); err != nil {
		return err
	}
	printKeyBlock(c.stdout, fmt.Sprintf("%s (%s): new key, shown once, provision the device with it now", plainID(id), kf.tag(id)), k)
	fmt.Fprintf(c.stderr, "rotated identity %s (%s) in %s; the running gateway closes its sessions under the old key when it reloads the file (R10)\n", showID(id), kf.tag(id), kf.path)
	return nil
}

// pskRevoke removes an identity. The gateway closes its sessions when it
// reloads the file (R10).
func pskRevoke(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	isHex := fs.Bool("hex", false, "the ID argument is hex")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := positional(pos, 1, 1, "identity: revoke ID"); err != nil {
		return err
	}
	id, err := identityArg(pos[0], *isHex)
	if err != nil {
		return err
	}
	kf, err := fs.open(readWrite)
	if err != nil {
		return err
	}
	defer kf.close()
	i, err := kf.find(id)
	if err != nil {
		return err
	}
	if err := kf.save(slices.Delete(slices.Clone(kf.keys), i, i+1)); err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "revoked identity %s (%s): removed from %s; the running gateway closes its sessions when it reloads the file (R10)\n", showID(id), kf.tag(id), kf.path)
	return nil
}
