package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/ustacknet/ustack/api"
	"github.com/ustacknet/ustack/metrics"
)

// checkMetricsAddr validates a --metrics value: IP:PORT (port 0 picks a
// free port).
func checkMetricsAddr(v string) error {
	if v == "" {
		return nil
	}
	if _, err := netip.ParseAddrPort(v); err != nil {
		return fmt.Errorf("invalid argument %q for \"--metrics\" flag: want IP:PORT, such as 127.0.0.1:9109 or [::1]:9109 (port 0 picks a free one)", v)
	}
	return nil
}

// metricsServer serves Prometheus metrics over TCP at /metrics.
type metricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// serveMetrics listens on addr (already checked) and serves src there. It
// prints the address it serves on to out, so that port 0 can be found.
func serveMetrics(addr string, src metrics.Sources, out io.Writer, log *slog.Logger) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(src))
	m := &metricsServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	fmt.Fprintf(out, "ustack: metrics on http://%s/metrics\n", ln.Addr())
	return m, nil
}

// Close stops the server and waits for it.
func (m *metricsServer) Close() {
	if m == nil {
		return
	}
	m.srv.Close()
	<-m.done
}

// handleMetrics adds GET /metrics to the API socket.
func handleMetrics(srv *api.Server, src metrics.Sources) {
	srv.Handle("GET /metrics", metrics.Handler(src).ServeHTTP)
}
