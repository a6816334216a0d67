package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ustacknet/ustack/api"
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

// metricsServer is the --metrics server: api.ListenMetrics, logged.
type metricsServer struct {
	srv *api.MetricsServer
	log *slog.Logger
}

// serveMetrics serves g's metrics at addr (already checked) over TCP. It
// prints the address it serves on to out, so that port 0 can be found.
func serveMetrics(addr string, g prometheus.Gatherer, out io.Writer, log *slog.Logger) (*metricsServer, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	srv, err := api.ListenMetrics(ap, g)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	fmt.Fprintf(out, "ustack: metrics on http://%s/metrics\n", srv.Addr())
	return &metricsServer{srv: srv, log: log}, nil
}

// Close stops the server and waits for it. A nil m does nothing.
func (m *metricsServer) Close() {
	if m == nil {
		return
	}
	if err := m.srv.Close(); err != nil {
		m.log.Error("metrics server", "err", err)
	}
}
