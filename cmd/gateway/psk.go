package main

import (
	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/internal/cli"
	"github.com/lwm2m-gateway/gateway/internal/pskcli"
)

// pskCmd runs `gateway psk …`, the key administration tool of
// internal/pskcli, on stores opened as serve opens them.
func pskCmd(c cli.IO, args []string) error {
	return pskcli.Run(pskcli.Config{Open: openPSKStore, LoadKEK: loadKEK}, c, args)
}

// openPSKStore opens the store of cfg for the psk tool: with serve's
// openStore, keeping a tag key next to the key store on first use (the
// tool announces it), with serve's start-up warnings dropped (the tool
// reports on the store itself: audit).
func openPSKStore(cfg *config.Config, o pskcli.OpenOptions) (*pskcli.Store, error) {
	ks, err := openStore(cfg, openOptions{log: zap.NewNop(), create: o.Create, plaintext: o.Plaintext, makeTagKey: true, announce: o.Announce})
	if ks == nil {
		return nil, err
	}
	// A store found but not loaded comes back with its error: audit reports where it is.
	return &pskcli.Store{Store: ks.Store, Policy: ks.policy, KEK: ks.kek, Config: ks.cfg, Where: ks.where, Shared: ks.shared}, err
}
