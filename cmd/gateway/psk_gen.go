package main

import (
	"errors"
	"fmt"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// pskGen adds an identity with a fresh key from crypto/rand (R2).
func pskGen(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	var b bindingFlags
	b.register(fs.FlagSet)
	length := fs.Int("length", 32, "key length in `bytes`, at least 16 (R1)")
	if err := fs.parseNone(args); err != nil {
		return err
	}
	k, err := b.key()
	if err != nil {
		return err
	}
	if *length < pskstore.MinKeyLen || *length > 1024 {
		return usageError{fmt.Sprintf("--length must be between %d (R1: 128 bits) and 1024 bytes", pskstore.MinKeyLen)}
	}
	ks, err := fs.open(create)
	if err != nil {
		return err
	}
	defer ks.close()
	if err := ks.checkBackend(k); err != nil {
		return err
	}
	if k.Secret, err = pskstore.GenerateSecret(*length); err != nil {
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
	printKeyBlock(c.stdout, fmt.Sprintf("%s (%s): shown once, provision the device with it now", plainID(k.Identity), ks.tag(k.Identity)), k)
	fmt.Fprintf(c.stderr, "added identity %s (%s) to %s, %s\n", showID(k.Identity), ks.tag(k.Identity), ks.where(), ks.sealing())
	return nil
}

// pskRotate gives an identity a fresh random key and keeps its bindings.
// Running gateways close the identity's sessions (R10).
func pskRotate(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	isHex := fs.Bool("hex", false, "the ID argument is hex")
	length := fs.Int("length", 32, "key length in `bytes`, at least 16 (R1)")
	id, err := fs.parseIdentity(args, isHex, "identity: rotate ID")
	if err != nil {
		return err
	}
	if *length < pskstore.MinKeyLen || *length > 1024 {
		return usageError{fmt.Sprintf("--length must be between %d (R1: 128 bits) and 1024 bytes", pskstore.MinKeyLen)}
	}
	ks, err := fs.open(readWrite)
	if err != nil {
		return err
	}
	defer ks.close()
	k, err := ks.find(c.ctx, id)
	if err != nil {
		return err
	}
	k = k.Clone()
	if k.ImportContext != nil {
		return fmt.Errorf("identity %s is an imported key (R6): its key derives from an external PSK that was deleted; revoke it and import a new external PSK instead", showID(id))
	}
	if k.Secret, err = pskstore.GenerateSecret(*length); err != nil {
		return err
	}
	k.AllowLowEntropy = false // a generated key passes the screen (R2)
	others, err := ks.others(c.ctx, id)
	if err != nil {
		return err
	}
	if err := ks.checkNew(c, others, []pskstore.Key{k}, nil); err != nil {
		return err
	}
	if err := ks.admin.rotate(c.ctx, k); err != nil {
		return err
	}
	printKeyBlock(c.stdout, fmt.Sprintf("%s (%s): new key, shown once, provision the device with it now", plainID(id), ks.tag(id)), k)
	fmt.Fprintf(c.stderr, "rotated identity %s (%s) in %s; %s\n", showID(id), ks.tag(id), ks.where(), ks.liveNote("its sessions under the old key"))
	return nil
}

// pskRevoke removes an identity. Running gateways close its sessions (R10).
func pskRevoke(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	isHex := fs.Bool("hex", false, "the ID argument is hex")
	id, err := fs.parseIdentity(args, isHex, "identity: revoke ID")
	if err != nil {
		return err
	}
	ks, err := fs.open(readWrite)
	if err != nil {
		return err
	}
	defer ks.close()
	err = ks.admin.revoke(c.ctx, id)
	if errors.Is(err, pskstore.ErrUnknownIdentity) {
		return ks.notFound(c.ctx, id)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "revoked identity %s (%s): removed from %s; %s\n", showID(id), ks.tag(id), ks.where(), ks.liveNote("its sessions"))
	return nil
}
