package main

import (
	"reflect"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/pskstore"
)

// reloader re-reads the configuration on SIGHUP without touching
// established sessions. What can change live does: the key store is
// re-read (file store; revocations then close sessions, R10) and the log
// level follows. Other changes need a restart and are logged by field name.
// An invalid file changes nothing: the running configuration stays. Each
// outcome is counted for /metrics.
type reloader struct {
	path    string
	running *config.Config
	store   pskstore.Store
	level   zap.AtomicLevel
	log     *zap.Logger
	reloads *prometheus.CounterVec // gateway_config_reloads_total{result}
}

// fileReloader is a store that re-reads its file on demand (the file
// store).
type fileReloader interface {
	Reload() error
	ReloadStats() (reloads, failures uint64)
}

func newReloader(path string, running *config.Config, store pskstore.Store, level zap.AtomicLevel, log *zap.Logger) *reloader {
	r := &reloader{path: path, running: running, store: store, level: level, log: log,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_config_reloads_total",
			Help: "Configuration reloads (SIGHUP) by result: ok, or failed (the running configuration or the last good keys stay).",
		}, []string{"result"})}
	r.reloads.WithLabelValues("ok")
	r.reloads.WithLabelValues("failed")
	return r
}

// reload logs exactly one line on failure, and "configuration reloaded"
// only on success.
func (r *reloader) reload() {
	next, err := config.Load(r.path)
	if err != nil {
		r.fail("reload refused: invalid configuration, the running one stays", err)
		return
	}
	if lvl, err := zapcore.ParseLevel(string(next.Log.Level)); err == nil && lvl != r.level.Level() {
		r.level.SetLevel(lvl)
		r.log.Info("log level changed", zap.Stringer("level", lvl))
	}
	r.running.Log.Level = next.Log.Level
	if fr, ok := r.store.(fileReloader); ok {
		if err := fr.Reload(); err != nil {
			r.fail("reload failed: the key file does not load, the last good keys stay", err)
			return
		}
	}
	if changed := changedFields(reflect.ValueOf(*r.running), reflect.ValueOf(*next), ""); len(changed) > 0 {
		r.log.Warn("configuration changes that take effect after a restart: "+strings.Join(changed, ", "), zap.Strings("fields", changed))
	}
	r.reloads.WithLabelValues("ok").Inc()
	r.log.Info("configuration reloaded")
}

func (r *reloader) fail(msg string, err error) {
	r.reloads.WithLabelValues("failed").Inc()
	r.log.Error(msg, zap.String("err", err.Error()))
}

// changedFields lists the YAML paths of the fields that differ between a
// and b (structs of config), e.g. "dtls.mtu", "backends".
func changedFields(a, b reflect.Value, prefix string) []string {
	if a.Kind() != reflect.Struct {
		if reflect.DeepEqual(a.Interface(), b.Interface()) {
			return nil
		}
		return []string{prefix}
	}
	var out []string
	for i := range a.NumField() {
		name, _, _ := strings.Cut(a.Type().Field(i).Tag.Get("yaml"), ",")
		if prefix != "" {
			name = prefix + "." + name
		}
		out = append(out, changedFields(a.Field(i), b.Field(i), name)...)
	}
	return out
}

// Describe and Collect export the reload counters: the configuration's and,
// for a file store, the key file's (reloads on change or SIGHUP).
func (r *reloader) Describe(ch chan<- *prometheus.Desc) {
	r.reloads.Describe(ch)
	ch <- descKeyFileReloads
}

var descKeyFileReloads = prometheus.NewDesc("gateway_key_file_reloads_total",
	"Reloads of the key file after it changed or on SIGHUP, by result: ok, or failed (the last good keys stay).", []string{"result"}, nil)

func (r *reloader) Collect(ch chan<- prometheus.Metric) {
	r.reloads.Collect(ch)
	if fr, ok := r.store.(fileReloader); ok {
		ok, failed := fr.ReloadStats()
		ch <- prometheus.MustNewConstMetric(descKeyFileReloads, prometheus.CounterValue, float64(ok), "ok")
		ch <- prometheus.MustNewConstMetric(descKeyFileReloads, prometheus.CounterValue, float64(failed), "failed")
	}
}
