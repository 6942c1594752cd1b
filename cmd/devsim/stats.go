package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/protocol/alert"
)

// stats are the counters of a run. Safe for concurrent use.
type stats struct {
	hsOK, hsFail atomic.Int64
	hsRetried    atomic.Int64 // failed handshakes followed by another try (--connect-retries)
	hsLat        *recorder    // every handshake
	hsWindow     *recorder    // since the last progress line

	opsOK, opsFail atomic.Int64
	reqLat         *recorder // every request, all operations
	reqWindow      *recorder

	up         atomic.Int64 // devices connected now
	reconnects atomic.Int64 // churn: disconnect + reconnect
	late       atomic.Int64 // messages sent late: --inflight requests already waiting
	noDevice   atomic.Int64 // messages not sent: no device connected

	mu        sync.Mutex
	byProfile map[string]*countPair
	byKind    map[string]*opStats // handshakes by why they ran: connect, churn, reboot, idle, reconnect
	ops       map[string]*opStats
	errs      map[string]int64
	samples   map[string]string  // one error text per kind, for diagnosis
	devices   devsim.DeviceStats // summed over closed clients
	loss      devsim.LossStats   // summed over closed clients
}

type countPair struct {
	OK     int64 `json:"ok"`
	Failed int64 `json:"failed"`
}

type opStats struct {
	countPair
	lat *recorder
}

func newStats() *stats {
	return &stats{
		hsLat: newRecorder(), hsWindow: newRecorder(),
		reqLat: newRecorder(), reqWindow: newRecorder(),
		byProfile: make(map[string]*countPair), byKind: make(map[string]*opStats), ops: make(map[string]*opStats),
		errs: make(map[string]int64), samples: make(map[string]string),
	}
}

// handshake records one handshake of profile p, run for reason kind.
func (s *stats) handshake(kind string, p *profile, d time.Duration, err error) {
	s.mu.Lock()
	c := s.byProfile[p.name]
	if c == nil {
		c = &countPair{}
		s.byProfile[p.name] = c
	}
	k := s.byKind[kind]
	if k == nil {
		k = &opStats{lat: newRecorder()}
		s.byKind[kind] = k
	}
	if err != nil {
		c.Failed++
		k.Failed++
	} else {
		c.OK++
		k.OK++
	}
	s.mu.Unlock()
	if err != nil {
		s.hsFail.Add(1)
		s.fail("handshake", err)
		return
	}
	s.hsOK.Add(1)
	k.lat.add(d)
	s.hsLat.add(d)
	s.hsWindow.add(d)
}

// retried records a failed handshake that the device tries again
// (--connect-retries): counted apart from the failures, with its error
// kind under "handshake_retried_…", so a run shows what its devices went
// through without failing on what a real device rides out.
func (s *stats) retried(err error) {
	s.hsRetried.Add(1)
	s.fail("handshake_retried", err)
}

// refused moves a handshake of profile p recorded as completed to the
// failed ones: the gateway ended the session before answering anything
// (raw mode, where no exchange follows the handshake at once). Its latency
// sample stays recorded.
func (s *stats) refused(p *profile, err error) {
	s.mu.Lock()
	if c := s.byProfile[p.name]; c != nil && c.OK > 0 {
		c.OK--
		c.Failed++
	}
	for _, k := range s.byKind { // raw mode: every handshake is connect or churn
		if k.OK > 0 {
			k.OK--
			k.Failed++
			break
		}
	}
	s.mu.Unlock()
	s.hsOK.Add(-1)
	s.hsFail.Add(1)
	s.fail("handshake", err)
}

// addClient adds a closed client's counts.
func (s *stats) addClient(d devsim.DeviceStats, l devsim.LossStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &s.devices
	t.IdleRehandshakes += d.IdleRehandshakes
	t.Reboots += d.Reboots
	t.Reconnects += d.Reconnects
	t.SessionsLost += d.SessionsLost
	t.Refused += d.Refused
	t.Sleeps += d.Sleeps
	t.LostWhileAsleep += d.LostWhileAsleep
	s.loss = s.loss.Add(l)
}

// op records one request of operation op.
func (s *stats) op(op string, d time.Duration, err error) {
	s.mu.Lock()
	o := s.ops[op]
	if o == nil {
		o = &opStats{lat: newRecorder()}
		s.ops[op] = o
	}
	if err != nil {
		o.Failed++
	} else {
		o.OK++
	}
	s.mu.Unlock()
	if err != nil {
		s.opsFail.Add(1)
		s.fail(op, err)
		return
	}
	s.opsOK.Add(1)
	o.lat.add(d)
	s.reqLat.add(d)
	s.reqWindow.add(d)
}

func (s *stats) fail(stage string, err error) {
	kind := stage + "_" + errorKind(err)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs[kind]++
	if _, ok := s.samples[kind]; !ok {
		msg := err.Error()
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		s.samples[kind] = msg
	}
}

// errorKind names the kind of an error for the summary ("timeout",
// "closed", "coap_4.03", "alert_HandshakeFailure", ...). Errors are told
// apart by errors.Is and errors.As, never by their text.
func errorKind(err error) string {
	var code *devsim.CodeError
	var opErr *net.OpError
	// pion's alert error embeds *alert.Alert, whose Marshal gives level
	// and description; the type itself is not exported.
	var alertErr interface {
		IsFatalOrCloseNotify() bool
		Marshal() ([]byte, error)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, devsim.ErrTimeout):
		return "no_ack"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, devsim.ErrRefused):
		if a, ok := devsim.AlertOf(err); ok {
			return "refused_alert_" + a.Description.String()
		}
		return "refused"
	case errors.Is(err, devsim.ErrSessionLost):
		if a, ok := devsim.AlertOf(err); ok {
			return "session_lost_alert_" + a.Description.String()
		}
		return "session_lost"
	case errors.Is(err, devsim.ErrClosed), errors.Is(err, errRawClosed), errors.Is(err, net.ErrClosed), errors.Is(err, dtls.ErrConnClosed):
		return "closed"
	case errors.As(err, &code):
		return fmt.Sprintf("coap_%d.%02d", code.Code>>5, code.Code&0x1f)
	case errors.Is(err, devsim.ErrReset):
		return "reset"
	case errors.Is(err, devsim.ErrNoObservation):
		return "no_observation"
	case errors.Is(err, devsim.ErrNotRegistered):
		return "not_registered"
	case errors.Is(err, devsim.ErrNotObservable):
		return "not_observable"
	case errors.As(err, &alertErr):
		if b, e := alertErr.Marshal(); e == nil && len(b) == 2 {
			return "alert_" + alertName(b[1])
		}
		return "alert"
	case errors.As(err, &opErr):
		return "net_" + strings.ReplaceAll(opErr.Op, " ", "_")
	}
	return "other"
}

func alertName(d byte) string { return alert.Description(d).String() }
