package main

import (
	"context"
	"reflect"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/gateway"
	"github.com/lwm2m-gateway/gateway/pskstore/file"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// reload re-reads the configuration on SIGHUP without touching established
// sessions. What can change live does: the key store is re-read (file
// store; revocations then close sessions, R10) and the log level follows.
// Other changes need a restart and are logged as such. An invalid file
// changes nothing: the running configuration stays.
func reload(path string, running *config.Config, store gateway.KeyStore, level zap.AtomicLevel, log *zap.Logger) {
	next, err := config.Load(path)
	if err != nil {
		log.Error("reload refused: invalid configuration, the running one stays", zap.Error(err))
		return
	}
	if lvl, err := zapcore.ParseLevel(string(next.Log.Level)); err == nil && lvl != level.Level() {
		level.SetLevel(lvl)
		log.Info("log level changed", zap.Stringer("level", lvl))
	}
	running.Log.Level = next.Log.Level
	if fs, ok := store.(*file.Store); ok {
		if err := fs.Reload(); err != nil {
			log.Error("key store reload failed, the last good keys stay", zap.Error(err))
		} else {
			n, _ := fs.Count(context.Background())
			log.Info("key store reloaded", zap.Int64("keys", n))
		}
	}
	if !reflect.DeepEqual(running, next) {
		log.Warn("configuration changes other than log.level and the key store take effect after a restart")
	}
	log.Info("configuration reloaded")
}
