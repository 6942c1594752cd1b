package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lwm2m-gateway/gateway/internal/cli"
)

// version and commit are set at build time by make build (-ldflags
// "-X main.version=… -X main.commit=…", from git); otherwise version is the
// module version of the build ("(devel)" for a source checkout) and commit
// the revision go build stamps when it can (-buildvcs).
var version, commit string

// build is what a binary says about itself: its version, the commit it was
// built from (go build stamps it from the checkout) and the Go release.
type build struct {
	Version, Commit, Go string
	Modified            bool // built from a checkout with uncommitted changes
}

func buildInfo() build {
	b := build{Version: version, Commit: commit, Go: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if b.Version == "" {
		b.Version = info.Main.Version
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			if b.Commit == "" {
				b.Commit = s.Value
			}
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

func (b build) String() string {
	commit := b.Commit
	if b.Modified {
		commit += " (modified)"
	}
	return fmt.Sprintf("gateway %s, commit %s, %s", b.Version, commit, b.Go)
}

// collector exports gateway_build_info, 1 with the build as labels, so a
// dashboard can tell which version each replica runs.
func (b build) collector() prometheus.Collector {
	commit := b.Commit
	if b.Modified {
		commit += "-modified"
	}
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "gateway_build_info",
		Help:        "Always 1; the labels say which build of the gateway runs.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": commit, "goversion": b.Go},
	}, func() float64 { return 1 })
}

const versionUsage = "usage: gateway version\n\nPrints the version, the commit the binary was built from and the Go release.\n"

func versionCmd(c cli.IO, args []string) error {
	fs := cli.NewFlags("version")
	pos, err := cli.Parse(fs, c, versionUsage, args)
	if err != nil {
		return err
	}
	if err := cli.Positional(pos, 0, 0, "", versionUsage); err != nil {
		return err
	}
	fmt.Fprintln(c.Stdout, buildInfo())
	return nil
}
