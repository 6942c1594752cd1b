package devsim

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/pion/dtls/v4/pkg/protocol/alert"
	"github.com/pion/logging"
	"go.uber.org/zap"
)

// pionLoggerFactory routes pion/dtls logs into zap (house style: pion's logs
// go through dtls.WithLoggerFactory). Trace is dropped, Debug and Info become
// Debug, Warn and Error keep their level.
type pionLoggerFactory struct{ log *zap.Logger }

func (f pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.Named(scope).Sugar()}
}

type pionLogger struct{ s *zap.SugaredLogger }

func (l pionLogger) Trace(string)                      {}
func (l pionLogger) Tracef(string, ...any)             {}
func (l pionLogger) Debug(msg string)                  { l.s.Debug(msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.s.Debug(fmt.Sprintf(format, args...)) }
func (l pionLogger) Info(msg string)                   { l.s.Debug(msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.s.Debug(fmt.Sprintf(format, args...)) }
func (l pionLogger) Warn(msg string)                   { l.s.Warn(msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.s.Warn(fmt.Sprintf(format, args...)) }
func (l pionLogger) Error(msg string)                  { l.s.Error(msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.s.Error(fmt.Sprintf(format, args...)) }

var _ logging.LoggerFactory = pionLoggerFactory{}

// alertCatcher is the logger factory of one session. pion v4.0.1 closes a
// connection on a fatal alert received after the handshake and its Read
// then returns io.EOF: the alert itself reaches no caller. Its only trace is
// pion's Trace line for every alert received ("%s: <- %s" with the alert's
// String), so the catcher keeps the last such alert for the session's error
// (issue 13: report the alert a refused device received). If pion changes
// the line, the alert is simply not reported.
type alertCatcher struct {
	base pionLoggerFactory
	last *atomic.Pointer[alert.Alert]
}

func (f alertCatcher) NewLogger(scope string) logging.LeveledLogger {
	return alertLogger{pionLogger: f.base.NewLogger(scope).(pionLogger), last: f.last}
}

type alertLogger struct {
	pionLogger
	last *atomic.Pointer[alert.Alert]
}

func (l alertLogger) Tracef(format string, args ...any) {
	if format != "%s: <- %s" || len(args) != 2 {
		return
	}
	if s, ok := args[1].(string); ok {
		if a, ok := parseAlert(s); ok {
			l.last.Store(&a)
		}
	}
}

// alertNames maps "Level: Description" as alert.Alert.String prints them.
var alertNames = sync.OnceValue(func() map[string]alert.Alert {
	m := make(map[string]alert.Alert, 2*256)
	for _, lvl := range []alert.Level{alert.Warning, alert.Fatal} {
		for d := range 256 {
			a := alert.Alert{Level: lvl, Description: alert.Description(d)}
			m[a.String()] = a
		}
	}
	return m
})

func parseAlert(s string) (alert.Alert, bool) {
	a, ok := alertNames()[s]
	return a, ok
}

// NewAlertRecorder returns a pion logger factory for a client built on
// pion directly (dtls.WithLoggerFactory), which discards pion's logs and
// keeps the last alert the connection received, and a function that
// returns that alert. It is how such a client reports the alert of a
// session refused after its handshake, which pion's Read turns into
// io.EOF (see alertCatcher).
func NewAlertRecorder() (logging.LoggerFactory, func() (alert.Alert, bool)) {
	last := new(atomic.Pointer[alert.Alert])
	f := alertCatcher{base: pionLoggerFactory{zap.NewNop()}, last: last}
	return f, func() (alert.Alert, bool) {
		if a := last.Load(); a != nil {
			return *a, true
		}
		return alert.Alert{}, false
	}
}
