package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/gateway"
	"github.com/lwm2m-gateway/gateway/internal/admin"
	"github.com/lwm2m-gateway/gateway/internal/cli"
)

// handoffTimeout bounds writing the session snapshots at SIGTERM.
const handoffTimeout = 30 * time.Second

const serveUsage = `usage: gateway serve --config FILE

Runs the gateway: JSON logs on stderr, the admin listener (metrics, health,
registrations) when admin.address is set. SIGHUP re-reads the configuration;
SIGTERM and SIGINT stop accepting handshakes and drain within
sessions.drain_timeout; with sessions.snapshot they write every session's
snapshot instead and exit without close_notify, and the next start
continues the sessions.
`

// fileWatcher is a store that reloads its file when it changes (the file
// store).
type fileWatcher interface {
	WatchFile(ctx context.Context, log *zap.Logger) error
}

func serveCmd(c cli.IO, args []string) error {
	fs := cli.NewFlags("serve")
	path := fs.String("config", "", "configuration `FILE` (YAML)")
	pos, err := cli.Parse(fs, c, serveUsage, args)
	if err != nil {
		return err
	}
	if *path == "" {
		return cli.UsageError{Msg: "--config FILE is required", Usage: cli.Usage(fs, serveUsage)}
	}
	if err := cli.Positional(pos, 0, 0, "", cli.Usage(fs, serveUsage)); err != nil {
		return err
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
	log, err := newLogger(cfg.Log, level, os.Stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	b := buildInfo()
	configWarnings(cfg, log)
	log.Info("gateway starting", zap.String("version", b.Version), zap.String("commit", b.Commit), zap.Bool("modified", b.Modified),
		zap.String("go", b.Go), zap.String("config", *path))
	ks, err := openStore(cfg, openOptions{log: log, makeTagKey: true})
	if err != nil {
		return fmt.Errorf("key store: %w", err)
	}
	defer ks.Close()
	checkBackends(context.Background(), cfg, log)
	state, err := openState(cfg, ks, log)
	if err != nil {
		return err
	}
	defer state.close()
	gc := gatewayConfig(cfg, ks, log)
	state.apply(&gc, cfg)
	srv, err := gateway.New(gc)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if w, ok := ks.Store.(fileWatcher); ok {
		// Edits of the key file take effect without a restart; revocations
		// reach live sessions through the store's Watch (R10).
		if err := w.WatchFile(ctx, log); err != nil {
			log.Error("cannot watch the key file; edits need a restart", zap.Error(err))
		}
	}
	r := newReloader(*path, cfg, ks.Store, level, log)
	if cfg.Admin.Address != "" {
		backends := map[string]string{}
		for name, b := range cfg.Backends {
			backends[name] = b.Address
		}
		h, err := admin.Handler(admin.Config{Server: srv, Store: ks.Store, Backends: backends, Resolve: resolve,
			Pprof: cfg.Admin.Pprof, Collectors: []prometheus.Collector{b.collector(), r}})
		if err != nil {
			return err
		}
		if _, err := admin.Serve(ctx, cfg.Admin.Address, h, log); err != nil {
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
			r.reload()
		}
	}
	stop() // a second signal kills the process the default way
	if state.sessions != nil {
		// The next process continues the sessions: write them, tell the
		// devices nothing.
		log.Info("handing sessions off", zap.String("snapshot", cfg.Sessions.Snapshot))
		hctx, cancel := context.WithTimeout(context.Background(), handoffTimeout)
		defer cancel()
		if err := srv.Handoff(hctx); err != nil {
			log.Error("handoff incomplete: some sessions will handshake again", zap.Error(err))
		}
	} else {
		drain := time.Duration(cfg.Sessions.DrainTimeout)
		log.Info("shutting down", zap.Duration("drain_timeout", drain))
		sctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	if err := <-errc; err != nil && !errors.Is(err, gateway.ErrServerClosed) {
		return err
	}
	st := srv.Stats()
	log.Info("stopped", zap.Uint64("handshakes_ok", st.HandshakesOK), zap.Uint64("datagrams_to_backend", st.DatagramsToBackend), zap.Uint64("datagrams_to_device", st.DatagramsToDevice))
	return nil
}
