package main

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/lwm2m-gateway/gateway/config"
)

// TestLoggerBuffersUntilErrorOrSync: with log.flush_interval set, info
// lines wait in the buffer (one write per buffer, not per session), an
// error flushes them and itself at once, and Sync (at exit) flushes the
// rest; flush_interval 0 writes every line at once.
func TestLoggerBuffersUntilErrorOrSync(t *testing.T) {
	minute := config.Duration(time.Minute)
	// zaptest.Buffer is not locked: the test reads it only while nothing
	// else writes (the flush timer is a minute away).
	var out zaptest.Buffer
	log, err := newLogger(config.Log{Level: config.LevelInfo, Format: config.FormatJSON, FlushInterval: minute}, zap.NewAtomicLevel(), &out)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("session established")
	if got := out.String(); got != "" {
		t.Fatalf("an info line was written at once with a 1m flush interval: %q", got)
	}
	log.Error("cannot establish session")
	got := out.String()
	if !strings.Contains(got, `"msg":"session established"`) || !strings.Contains(got, `"msg":"cannot establish session"`) {
		t.Fatalf("after an error: %q, want both lines", got)
	}
	log.Info("session closed")
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"msg":"session closed"`) {
		t.Fatalf("Sync did not flush: %q", out.String())
	}

	zero := config.Duration(0)
	var direct zaptest.Buffer
	log, err = newLogger(config.Log{Level: config.LevelInfo, Format: config.FormatConsole, FlushInterval: zero}, zap.NewAtomicLevel(), &direct)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("session established")
	if !strings.Contains(direct.String(), "session established") {
		t.Fatalf("flush_interval 0: %q, want the line written at once", direct.String())
	}
	if _, err := newLogger(config.Log{Level: "loud"}, zap.NewAtomicLevel(), zapcore.AddSync(&direct)); err == nil {
		t.Error("level loud accepted")
	}
}
