package main

import (
	"context"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lwm2m-gateway/gateway/internal/cli"
	"github.com/lwm2m-gateway/gateway/internal/demo"
)

const demoUsage = `usage: gateway demo [--devices N] [--duration D] [-v]

Runs the gateway's main job on embedded defaults, on loopback: an in-memory
key store with fresh random keys, a built-in LwM2M backend and a fleet of
simulated devices (DTLS 1.3 and 1.2 mixed), printing each registration and a
summary every few seconds. Ctrl-C stops it.
`

func demoCmd(c cli.IO, args []string) error {
	fs := cli.NewFlags("demo")
	devices := fs.Int("devices", 5, "number of simulated devices, 1..1000")
	duration := fs.Duration("duration", 0, "stop after this long (0: run until Ctrl-C)")
	verbose := fs.Bool("v", false, "show the gateway's own log lines")
	pos, err := cli.Parse(fs, c, demoUsage, args)
	if err != nil {
		return err
	}
	if err := cli.Positional(pos, 0, 0, "", cli.Usage(fs, demoUsage)); err != nil {
		return err
	}
	if *devices < 1 || *devices > 1000 {
		return cli.UsageError{Msg: "--devices must be between 1 and 1000", Usage: cli.Usage(fs, demoUsage)}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	go func() { <-ctx.Done(); stop() }() // a second signal during the drain kills the process
	zc := zap.NewDevelopmentConfig()
	zc.Level = zap.NewAtomicLevelAt(zapcore.WarnLevel)
	if *verbose {
		zc.Level = zap.NewAtomicLevelAt(zapcore.InfoLevel)
	}
	zc.DisableStacktrace = true
	zc.ErrorOutputPaths, zc.OutputPaths = []string{"stderr"}, []string{"stderr"}
	log, err := zc.Build()
	if err != nil {
		return err
	}
	return demo.Run(ctx, *devices, c.Stdout, log)
}
