package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/gateway"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"go.uber.org/zap"
)

func serveCmd(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if *path == "" || fs.NArg() != 0 {
		return usageError{"serve needs --config FILE and no other arguments"}
	}
	// Catch SIGHUP from the start: a reload sent while the gateway is still
	// starting must not kill it (the default action); it is handled once
	// serving.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	level := zap.NewAtomicLevel()
	log, err := newLogger(cfg.Log, level)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	for _, d := range cfg.Deprecated() {
		log.Warn("configuration: " + d)
	}
	tagger, err := newTagger(cfg.Store)
	if err != nil {
		return err
	}
	store, err := openStore(cfg, tagger, log)
	if err != nil {
		return fmt.Errorf("key store: %w", err)
	}
	defer closeStore(store)
	srv, err := gateway.New(gatewayConfig(cfg, store, tagger, log))
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if fs, ok := store.(*file.Store); ok {
		// Edits of the key file take effect without a restart; revocations
		// reach live sessions through the store's Watch (R10).
		if err := fs.WatchFile(ctx, log); err != nil {
			log.Error("cannot watch the key file; edits need a restart", zap.Error(err))
		}
	}
	if cfg.Admin.Address != "" {
		h, err := adminHandler(srv, store, gatewayConfig(cfg, store, tagger, log).Backends, cfg.Admin.Pprof)
		if err != nil {
			return err
		}
		if _, err := serveAdmin(ctx, cfg.Admin.Address, h, log); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background()) }()
	log.Info("gateway started", zap.Int("listeners", len(srv.Addrs())), zap.Strings("backends", cfg.BackendNames()))

wait:
	for {
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			break wait
		case <-hup:
			reload(*path, cfg, store, level, log)
		}
	}
	stop() // a second signal kills the process the default way
	drain := time.Duration(cfg.Sessions.DrainTimeout)
	log.Info("shutting down", zap.Duration("drain_timeout", drain))
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if err := <-errc; err != nil && !errors.Is(err, gateway.ErrServerClosed) {
		return err
	}
	st := srv.Stats()
	log.Info("stopped", zap.Uint64("handshakes_ok", st.HandshakesOK), zap.Uint64("datagrams_to_backend", st.DatagramsToBackend), zap.Uint64("datagrams_to_device", st.DatagramsToDevice))
	return nil
}

func checkConfigCmd(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usageError{"check-config needs exactly one FILE"}
	}
	cfg, err := config.Load(args[0])
	if err != nil {
		return err
	}
	tagger, err := newTagger(cfg.Store)
	if err != nil {
		return err
	}
	store, err := openStore(cfg, tagger, zap.NewNop())
	if err != nil {
		return fmt.Errorf("key store: %w", err)
	}
	defer closeStore(store)
	n, err := countKeys(store)
	if err != nil {
		return fmt.Errorf("key store: %w", err)
	}
	for _, d := range cfg.Deprecated() {
		fmt.Fprintf(stdout, "%s: warning: %s\n", args[0], d)
	}
	fmt.Fprintf(stdout, "%s: ok (%d listeners, %d backends, %s store with %d keys)\n", args[0], len(cfg.Listeners), len(cfg.Backends), cfg.Store.Type, n)
	return nil
}
