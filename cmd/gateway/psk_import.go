package main

import (
	"fmt"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/pskstore/importer"
)

// pskImport replaces an external PSK by the keys RFC 9258 imports from it
// for the gateway's DTLS 1.3 targets, and deletes the EPSK (R6).
func pskImport(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	identity := fs.String("identity", "", "`identity` of the external PSK (EPSK) to import, as text")
	identityHex := fs.String("identity-hex", "", "identity of the EPSK in `hex`")
	client := fs.String("client", "", "the device's `name` in the importer context, e.g. its LwM2M endpoint name")
	server := fs.String("server", "", "the gateway's server `name` in the importer context (the SNI devices send)")
	kdf := fs.String("kdf", "both", "target `KDF`s: both, sha256 (HKDF_SHA256) or sha384 (HKDF_SHA384)")
	if err := fs.parseNone(args); err != nil {
		return err
	}
	id, err := identityFlags(*identity, *identityHex)
	if err != nil {
		return err
	}
	if *client == "" || *server == "" {
		return usageError{"--client NAME and --server NAME are required: the importer context names both peers (R4, R6)"}
	}
	ctx := importer.Context(*client, *server)
	if ctx == nil {
		return usageError{"--client and --server are too long for an importer context"}
	}
	targets := importer.DTLSTargets()
	switch *kdf {
	case "both":
	case "sha256":
		targets = targets[:1]
	case "sha384":
		targets = targets[1:]
	default:
		return usageError{fmt.Sprintf("--kdf %q: use both, sha256 or sha384", *kdf)}
	}

	ks, err := fs.open(readWrite)
	if err != nil {
		return err
	}
	defer ks.close()
	epsk, err := ks.find(c.ctx, id)
	if err != nil {
		return err
	}
	if epsk.ImportContext != nil {
		return fmt.Errorf("identity %s is already an imported key; import from an external PSK", showID(id))
	}
	if epsk.ServerName != "" && epsk.ServerName != *server {
		return fmt.Errorf("--server %q differs from the server name %q identity %s is bound to (R4: one key, one server)", *server, epsk.ServerName, showID(id))
	}
	imported, err := importer.Import(epsk, ctx, targets)
	if err != nil {
		return fmt.Errorf("identity %s: %w", showID(id), err)
	}
	others, err := ks.others(c.ctx, id)
	if err != nil {
		return err
	}
	where := func(j int) string { return "imported key for " + kdfName(targets[j].KDF) }
	if err := ks.checkNew(c, others, imported, where); err != nil {
		return err
	}
	if err := ks.admin.replace(c.ctx, id, imported); err != nil {
		return storeError(err, imported, where)
	}
	for j, k := range imported {
		printKeyBlock(c.stdout, fmt.Sprintf("imported from %s for DTLS 1.3 %s (%s): shown once, provision the device with it now",
			plainID(id), kdfName(targets[j].KDF), ks.tag(k.Identity)), k)
	}
	fmt.Fprintf(c.stderr, "imported identity %s with context client %q, server %q: %d imported keys stored and the external PSK deleted from %s (R6).\n"+
		"Devices send an imported identity (binary: identity_hex above) and use its key as an ordinary external PSK "+
		"(pion/dtls has no \"imp binder\" label, RFC 9258 §5.2).\n", showID(id), *client, *server, len(imported), ks.where())
	return nil
}

func kdfName(kdf uint16) string {
	if kdf == importer.HKDFSHA384 {
		return "HKDF_SHA384"
	}
	return "HKDF_SHA256"
}

// pskRekey re-seals every key under a new key-encryption key. The store is
// read with the current KEK (plaintext keys are accepted: rekey is also how
// a plaintext store gets sealed), every key is checked to open under the
// new KEK, and only then written: the key file atomically, the PostgreSQL
// store in one transaction; on any failure the store is left as it was.
func pskRekey(c *pskContext, args []string) error {
	fs := newPSKFlags(c)
	newFile := fs.String("new-kek-file", "", "`FILE` holding the new key-encryption key (32 raw bytes, hex or base64)")
	newEnv := fs.String("new-kek-env", "", "environment variable `NAME` holding the new key-encryption key")
	if err := fs.parseNone(args); err != nil {
		return err
	}
	if (*newFile == "") == (*newEnv == "") {
		return usageError{"give --new-kek-file FILE or --new-kek-env NAME"}
	}
	newKEK, err := loadKEK(config.Store{KEKFile: *newFile, KEKEnv: *newEnv})
	if err != nil {
		return fmt.Errorf("new kek: %w", err)
	}
	ks, err := fs.open(rekeying)
	if err != nil {
		return err
	}
	defer ks.close()
	was := "plaintext"
	if ks.kek != nil {
		was = "kek " + ks.kek.ID()
	}
	n, err := ks.admin.rekey(c.ctx, newKEK)
	if err != nil {
		return err
	}
	newSource := kekSource(config.Store{KEKFile: *newFile, KEKEnv: *newEnv})
	fmt.Fprintf(c.stderr, "re-sealed %d keys in %s under kek %s (was %s).\n", n, ks.where(), newKEK.ID(), was)
	if ks.shared {
		fmt.Fprintf(c.stderr, "Now configure the new key-encryption key (%s) for every gateway replica and restart them: until then, "+
			"replicas still configured with the old one fail new handshakes (their established sessions go on); "+
			"gateway psk commands need the new one too.\n", newSource)
		return nil
	}
	fmt.Fprintf(c.stderr, "Now configure the new key-encryption key (%s) for the gateway and restart it; until then it keeps serving the keys it has loaded "+
		"and logs that it cannot reload the file.\n", newSource)
	return nil
}
