// Package health serves the HTTP probes of health_checks (SPIRE's shape):
// a liveness path, a readiness path, and /debug/heap, which reports the live
// heap after a garbage collection so benchmarks can compare memory use. It is
// meant for a loopback listener; it exposes no configuration or secrets.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"time"
)

// Config says where and what to serve.
type Config struct {
	Addr      string
	LivePath  string // default /live
	ReadyPath string // default /ready
	// Ready reports whether the process can do its job.
	Ready func() bool
}

// Serve serves the probes until ctx ends.
func Serve(ctx context.Context, c Config) error {
	if c.LivePath == "" {
		c.LivePath = "/live"
	}
	if c.ReadyPath == "" {
		c.ReadyPath = "/ready"
	}
	mux := http.NewServeMux()
	mux.HandleFunc(c.LivePath, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc(c.ReadyPath, func(w http.ResponseWriter, _ *http.Request) {
		if c.Ready != nil && !c.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/debug/heap", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		json.NewEncoder(w).Encode(map[string]uint64{"heap_alloc": m.HeapAlloc, "heap_inuse": m.HeapInuse, "sys": m.Sys})
	})
	s := &http.Server{Addr: c.Addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	if err := s.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("health: %w", err)
	}
	return nil
}
