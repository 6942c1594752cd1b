// Package admin is the gateway's admin HTTP endpoint: Prometheus metrics,
// health and readiness probes, and read-only views of the sessions and
// registrations (identity tags and endpoint names only, R9).
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/gateway"
	"github.com/lwm2m-gateway/gateway/pskstore"
)

// probeIdentity is looked up by /readyz to check the store answers; no real
// identity starts with the reserved resumption prefix (R8), so it never
// resolves to a key.
var probeIdentity = []byte(pskstore.ResumptionPrefix + "readiness-probe")

// Config is what the admin endpoint shows and probes.
type Config struct {
	Server *gateway.Server
	// Store is probed by /readyz: it must answer a lookup.
	Store pskstore.Store
	// Backends (name → host:port) are resolved by /readyz with Resolve.
	Backends map[string]string
	Resolve  func(ctx context.Context, addr string) error
	// Pprof adds /debug/pprof/.
	Pprof bool
	// Collectors are served by /metrics beside the gateway's and the Go
	// runtime's.
	Collectors []prometheus.Collector
}

// Handler serves /metrics, /healthz, /readyz, /sessions, /registrations
// and, when configured, /debug/pprof/.
func Handler(cfg Config) (http.Handler, error) {
	srv := cfg.Server
	reg := prometheus.NewRegistry()
	for _, c := range append([]prometheus.Collector{
		srv.Collector(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}, cfg.Collectors...) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context(), cfg); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /sessions", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(sessionsView(srv.Sessions()))
	})
	mux.HandleFunc("GET /registrations", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(registrationsView(srv.Registrations()))
	})
	if cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux, nil
}

// registration is one live registration as /registrations shows it:
// snake_case keys, durations in seconds (README "Admin endpoints").
type registration struct {
	IdentityTag string  `json:"identity_tag"`
	Endpoint    string  `json:"endpoint"`
	Location    string  `json:"location"`
	Lifetime    float64 `json:"lifetime"` // seconds, from Register/Update
	Remote      string  `json:"remote"`   // the device's current address
	IdleFor     float64 `json:"idle_for"` // seconds since the last datagram either way
}

type registrations struct {
	Count         int            `json:"count"`
	Registrations []registration `json:"registrations"` // [] when none
}

func registrationsView(regs []gateway.Registration) registrations {
	out := registrations{Count: len(regs), Registrations: make([]registration, 0, len(regs))}
	for _, r := range regs {
		out.Registrations = append(out.Registrations, registration{
			IdentityTag: r.IdentityTag, Endpoint: r.Endpoint, Location: r.Location,
			Lifetime: r.Lifetime.Seconds(), Remote: r.Remote, IdleFor: r.IdleFor.Seconds(),
		})
	}
	return out
}

// session is one established session as /sessions shows it: no identity,
// no key (R9), durations in seconds.
type session struct {
	IdentityTag string  `json:"identity_tag"`
	Endpoint    string  `json:"endpoint"`
	Remote      string  `json:"remote"`
	Version     string  `json:"version"`
	Suite       string  `json:"suite"`
	Mode        string  `json:"mode"`
	DataPlane   string  `json:"data_plane"`
	Restored    bool    `json:"restored"` // continued from a snapshot (restart, takeover)
	Relayed     bool    `json:"relayed"`  // reached through another replica
	Age         float64 `json:"age"`
	IdleFor     float64 `json:"idle_for"`
	Upstreams   int     `json:"upstreams"`
}

type sessions struct {
	Count    int       `json:"count"`
	Restored int       `json:"restored"`
	Sessions []session `json:"sessions"` // [] when none
}

func sessionsView(ss []gateway.SessionInfo) sessions {
	out := sessions{Count: len(ss), Sessions: make([]session, 0, len(ss))}
	for _, s := range ss {
		if s.Restored {
			out.Restored++
		}
		out.Sessions = append(out.Sessions, session{IdentityTag: s.IdentityTag, Endpoint: s.Endpoint, Remote: s.Remote,
			Version: s.Version, Suite: s.Suite, Mode: s.Mode, DataPlane: s.DataPlane, Restored: s.Restored,
			Relayed: s.Relayed, Age: s.Age.Seconds(), IdleFor: s.IdleFor.Seconds(), Upstreams: s.Upstreams})
	}
	return out
}

// ready reports why the gateway cannot take traffic: still starting (a
// restarted gateway restores its sessions before it is ready), no listener
// bound, the store not answering, or a backend name that does not resolve.
func ready(ctx context.Context, cfg Config) error {
	if !cfg.Server.Ready() {
		return errors.New("starting: restoring sessions")
	}
	if len(cfg.Server.Addrs()) == 0 {
		return errors.New("no listener bound")
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := cfg.Store.Lookup(lctx, probeIdentity); err != nil && !errors.Is(err, pskstore.ErrUnknownIdentity) {
		return fmt.Errorf("key store: %w", err)
	}
	if cfg.Resolve == nil {
		return nil
	}
	for name, addr := range cfg.Backends {
		if err := cfg.Resolve(lctx, addr); err != nil {
			return fmt.Errorf("backend %s: %w", name, err)
		}
	}
	return nil
}

// Serve runs the admin HTTP listener on addr until ctx ends.
func Serve(ctx context.Context, addr string, h http.Handler, log *zap.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener %q: %w", addr, err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", zap.Error(err))
		}
	}()
	log.Info("admin listening", zap.Stringer("addr", ln.Addr()))
	return ln.Addr(), nil
}
