package pskcli

import (
	"errors"
	"fmt"

	"github.com/lwm2m-gateway/gateway/internal/cli"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/lwm2m-gateway/gateway/pskstore/export"
	"github.com/lwm2m-gateway/gateway/pskstore/importer"
	"github.com/lwm2m-gateway/gateway/pskstore/sealed"
)

// rotateCmd gives an identity a fresh random key and keeps its bindings.
// Running gateways close the identity's sessions (R10).
func rotateCmd(f *cmdFlags, args []string) error {
	isHex := f.Bool("hex", false, "the ID argument is hex")
	length := lengthFlag(f)
	id, err := f.parseID(args, isHex)
	if err == nil {
		err = checkLength(*length, f.usage())
	}
	if err != nil {
		return err
	}
	ks, err := f.open(false, false)
	if err != nil {
		return err
	}
	defer ks.Close()
	r, err := capability[pskstore.Rotator](ks, "rotate keys")
	if err != nil {
		return err
	}
	k, err := ks.find(id)
	if err != nil {
		return err
	}
	if k.ImportContext != nil {
		return fmt.Errorf("identity %s is an imported key (R6): its key derives from an external PSK that was deleted; revoke it and import a new external PSK instead", export.Show(id))
	}
	if k.Secret, err = pskstore.GenerateSecret(*length); err != nil {
		return err
	}
	if err := r.Rotate(ctx(), id, k.Secret); err != nil {
		return ks.refused(err, []pskstore.Key{k}, nil, "")
	}
	printKeyBlock(f.c.Stdout, fmt.Sprintf("%s (%s): new key, shown once, provision the device with it now", plainID(id), ks.tag(id)), k)
	fmt.Fprintf(f.c.Stderr, "rotated identity %s (%s) in %s; %s\n", export.Show(id), ks.tag(id), ks.Where, ks.liveNote("its sessions under the old key"))
	return nil
}

// revokeCmd removes an identity. Running gateways close its sessions (R10).
func revokeCmd(f *cmdFlags, args []string) error {
	isHex := f.Bool("hex", false, "the ID argument is hex")
	id, err := f.parseID(args, isHex)
	if err != nil {
		return err
	}
	ks, err := f.open(false, false)
	if err != nil {
		return err
	}
	defer ks.Close()
	d, err := capability[pskstore.Deleter](ks, "revoke keys")
	if err != nil {
		return err
	}
	err = d.Delete(ctx(), id)
	if errors.Is(err, pskstore.ErrUnknownIdentity) {
		return ks.notFound(id)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(f.c.Stderr, "revoked identity %s (%s): removed from %s; %s\n", export.Show(id), ks.tag(id), ks.Where, ks.liveNote("its sessions"))
	return nil
}

// importCmd replaces an external PSK by the keys RFC 9258 imports from it
// for the gateway's DTLS 1.3 targets, and deletes the EPSK (R6). The
// imported keys are bound to the server name the context names (R5).
func importCmd(f *cmdFlags, args []string) error {
	identity := f.String("identity", "", "`identity` of the external PSK (EPSK) to import, as text")
	identityHex := f.String("identity-hex", "", "identity of the EPSK in `hex`")
	client := f.String("client", "", "the device's `name` in the importer context, e.g. its LwM2M endpoint name")
	server := f.String("server", "", "the gateway's server `name` in the importer context: the SNI devices send, which the keys are bound to (R5)")
	kdf := f.String("kdf", "both", "target `KDF`s: both, sha256 (HKDF_SHA256) or sha384 (HKDF_SHA384)")
	if _, err := f.parse(args, 0, 0, ""); err != nil {
		return err
	}
	id, err := identityFlags(*identity, *identityHex, f.usage())
	if err != nil {
		return err
	}
	context := importer.Context(*client, *server)
	switch {
	case *client == "" || *server == "":
		return cli.UsageError{Msg: "--client NAME and --server NAME are required: the importer context names both peers (R4, R6)", Usage: f.usage()}
	case context == nil:
		return cli.UsageError{Msg: "--client and --server are too long for an importer context", Usage: f.usage()}
	}
	targets := map[string][]importer.Target{"both": importer.DTLSTargets(), "sha256": importer.DTLSTargets()[:1], "sha384": importer.DTLSTargets()[1:]}[*kdf]
	if targets == nil {
		return cli.UsageError{Msg: fmt.Sprintf("--kdf %q: use both, sha256 or sha384", *kdf), Usage: f.usage()}
	}
	ks, err := f.open(false, false)
	if err != nil {
		return err
	}
	defer ks.Close()
	x, err := capability[pskstore.Replacer](ks, "replace keys")
	if err != nil {
		return err
	}
	epsk, err := ks.find(id)
	switch {
	case err != nil:
		return err
	case epsk.ImportContext != nil:
		return fmt.Errorf("identity %s is already an imported key; import from an external PSK", export.Show(id))
	case epsk.ServerName != "" && epsk.ServerName != *server:
		return fmt.Errorf("--server %q differs from the server name %q identity %s is bound to (R4: one key, one server)", *server, epsk.ServerName, export.Show(id))
	}
	epsk.ServerName = *server // the imported keys are bound to the server the context names (R5)
	imported, err := importer.Import(epsk, context, targets)
	if err != nil {
		return fmt.Errorf("identity %s: %w", export.Show(id), err)
	}
	where := func(j int) string { return "imported key for " + kdfName(targets[j].KDF) }
	ks.warn(f, imported, where)
	if err := x.Replace(ctx(), id, imported); err != nil {
		return ks.refused(err, imported, where, "")
	}
	for j, k := range imported {
		printKeyBlock(f.c.Stdout, fmt.Sprintf("imported from %s for DTLS 1.3 %s (%s): shown once, provision the device with it now",
			plainID(id), kdfName(targets[j].KDF), ks.tag(k.Identity)), k)
	}
	fmt.Fprintf(f.c.Stderr, "imported identity %s with context client %q, server %q: %d imported keys stored and the external PSK deleted from %s (R6); "+
		"the imported keys are bound to server name %q (R5).\nDevices send an imported identity (binary: identity_hex above) and use its key as an ordinary external PSK "+
		"(pion/dtls has no \"imp binder\" label, RFC 9258 §5.2).\n", export.Show(id), *client, *server, len(imported), ks.Where, *server)
	return nil
}

func kdfName(kdf uint16) string {
	if kdf == importer.HKDFSHA384 {
		return "HKDF_SHA384"
	}
	return "HKDF_SHA256"
}

// rekeyCmd re-seals every key under a new key-encryption key and reports
// the state it found (sealed.Rekeyer): the key file atomically, the
// PostgreSQL store in one transaction; on any failure the store is left as
// it was.
func rekeyCmd(f *cmdFlags, args []string) error {
	newFile := f.String("new-kek-file", "", "`FILE` holding the new key-encryption key (32 raw bytes, hex or base64)")
	newEnv := f.String("new-kek-env", "", "environment variable `NAME` holding the new key-encryption key")
	if _, err := f.parse(args, 0, 0, ""); err != nil {
		return err
	}
	if (*newFile == "") == (*newEnv == "") {
		return cli.UsageError{Msg: "give --new-kek-file FILE or --new-kek-env NAME", Usage: f.usage()}
	}
	newKEK, err := f.wiring.LoadKEK(*newFile, *newEnv)
	if err != nil {
		return fmt.Errorf("new kek: %w", err)
	}
	ks, err := f.open(false, true)
	if err != nil {
		return err
	}
	defer ks.Close()
	r, err := capability[sealed.Rekeyer](ks, "re-seal keys")
	if err != nil {
		return err
	}
	found, err := r.Rekey(ctx(), newKEK)
	if err != nil {
		return err
	}
	source := "kek file " + *newFile
	if *newEnv != "" {
		source = "kek environment variable " + *newEnv
	}
	fmt.Fprintf(f.c.Stderr, "re-sealed %d keys in %s under kek %s; found %s.\n", found.Keys, ks.Where, newKEK.ID(), found.Found())
	if ks.Shared {
		fmt.Fprintf(f.c.Stderr, "Now configure the new key-encryption key (%s) for every gateway replica and restart them: until then, "+
			"replicas still configured with the old one fail new handshakes (their established sessions go on); "+
			"gateway psk commands need the new one too.\n", source)
		return nil
	}
	fmt.Fprintf(f.c.Stderr, "Now configure the new key-encryption key (%s) for the gateway and restart it; until then it keeps serving the keys it has loaded "+
		"and logs that it cannot reload the file.\n", source)
	return nil
}
