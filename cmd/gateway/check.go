package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/internal/cli"
)

const checkUsage = `usage: gateway check-config FILE

Validates a configuration file and opens its key store without serving, then
prints every warning serve would log at start: key and KEK file permissions,
keys in plaintext, RFC 9257 SHOULD findings of the key file (R7), backend
hosts that do not resolve, a password in store.dsn. Exit status 0 when the
gateway would start, whatever the warnings; 1 when it would not.
`

func checkConfigCmd(c cli.IO, args []string) error {
	fs := cli.NewFlags("check-config")
	pos, err := cli.Parse(fs, c, checkUsage, args)
	if err != nil {
		return err
	}
	if err := cli.Positional(pos, 1, 1, "FILE", checkUsage); err != nil {
		return err
	}
	cfg, err := config.Load(pos[0])
	if err != nil {
		return err
	}
	var warnings int
	log := warningLogger(c.Stdout, &warnings)
	configWarnings(cfg, log)
	ks, err := openStore(cfg, openOptions{log: log})
	if err != nil {
		return fmt.Errorf("key store: %w", err)
	}
	defer ks.Close()
	ctx, cancel := context.WithTimeout(context.Background(), postgresOpenTimeout)
	defer cancel()
	n, err := ks.Store.(interface {
		Count(context.Context) (int64, error)
	}).Count(ctx)
	if err != nil {
		return fmt.Errorf("key store: %w", err)
	}
	checkBackends(ctx, cfg, log)
	fmt.Fprintf(c.Stdout, "%s: ok (%d listeners, %d backends, %s store with %d keys, %d warnings)\n",
		pos[0], len(cfg.Listeners), len(cfg.Backends), cfg.Store.Type, n, warnings)
	return nil
}

// warningLogger prints warnings as "warning: message {fields}" lines on w
// and counts them: check-config hands it to what serve hands its logger.
func warningLogger(w io.Writer, n *int) *zap.Logger {
	enc := zapcore.NewConsoleEncoder(zapcore.EncoderConfig{
		MessageKey: "msg", LevelKey: "level", ConsoleSeparator: " ",
		EncodeLevel: func(_ zapcore.Level, e zapcore.PrimitiveArrayEncoder) { e.AppendString("warning:") },
		EncodeName:  zapcore.FullNameEncoder,
	})
	core := zapcore.NewCore(enc, zapcore.AddSync(w), zapcore.WarnLevel)
	return zap.New(core, zap.Hooks(func(zapcore.Entry) error { *n++; return nil }))
}

// configWarnings logs the obsolete settings the configuration still sets.
func configWarnings(cfg *config.Config, log *zap.Logger) {
	for _, d := range cfg.Deprecated() {
		log.Warn("configuration: " + d)
	}
}

// resolveTimeout bounds the name lookup of one backend host.
const resolveTimeout = 2 * time.Second

// checkBackends warns about each backend whose host does not resolve: the
// gateway starts, but /readyz fails and its devices' traffic has nowhere
// to go until it does.
func checkBackends(ctx context.Context, cfg *config.Config, log *zap.Logger) {
	for _, name := range slices.Sorted(maps.Keys(cfg.Backends)) {
		if err := resolve(ctx, cfg.Backends[name].Address); err != nil {
			log.Warn("backend "+name+": "+err.Error()+"; /readyz fails until it resolves", zap.String("backend", name))
		}
	}
}

// resolver resolves backend hosts; tests replace it, to query no DNS
// server.
var resolver = net.DefaultResolver

// resolve looks up the host of a host:port address.
func resolve(ctx context.Context, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	if _, err := resolver.LookupHost(ctx, host); err != nil {
		return fmt.Errorf("host %q does not resolve: %w", host, err)
	}
	return nil
}
