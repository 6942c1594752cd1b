package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/lwm2m-gateway/gateway/gateway"
	"github.com/lwm2m-gateway/gateway/pskstore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// probeIdentity is looked up by /readyz to check the store answers; no real
// identity starts with the reserved resumption prefix (R8), so it never
// resolves to a key.
var probeIdentity = []byte(pskstore.ResumptionPrefix + "readiness-probe")

// adminHandler serves /metrics, /healthz, /readyz, /registrations (endpoint
// names and identity tags only, R9) and, when enabled, /debug/pprof/.
func adminHandler(srv *gateway.Server, store gateway.KeyStore, backends map[string]string, withPprof bool) (http.Handler, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		srv.Collector(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
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
		if err := ready(r.Context(), srv, store, backends); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /registrations", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		regs := srv.Registrations()
		out := struct {
			Count         int                    `json:"count"`
			Registrations []gateway.Registration `json:"registrations"`
		}{len(regs), regs}
		_ = json.NewEncoder(w).Encode(out)
	})
	if withPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux, nil
}

// ready reports why the gateway cannot take traffic: no listener bound, the
// store not answering, or a backend name that does not resolve.
func ready(ctx context.Context, srv *gateway.Server, store gateway.KeyStore, backends map[string]string) error {
	if len(srv.Addrs()) == 0 {
		return errors.New("no listener bound")
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := store.Lookup(lctx, probeIdentity); err != nil && !errors.Is(err, pskstore.ErrUnknownIdentity) {
		return fmt.Errorf("key store: %w", err)
	}
	for name, addr := range backends {
		if _, err := net.DefaultResolver.LookupHost(lctx, hostOf(addr)); err != nil {
			return fmt.Errorf("backend %s: %w", name, err)
		}
	}
	return nil
}

func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// serveAdmin runs the admin HTTP listener until ctx ends.
func serveAdmin(ctx context.Context, addr string, h http.Handler, log *zap.Logger) (net.Addr, error) {
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
