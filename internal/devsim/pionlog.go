package devsim

import (
	"fmt"

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
