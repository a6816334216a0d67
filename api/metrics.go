package api

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricsServer serves GET /metrics alone over plain HTTP on TCP, for a
// Prometheus server to scrape (`--metrics IP:PORT`). The route is the
// control socket's, with the same answers.
type MetricsServer struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}

	closeOnce sync.Once
	serveErr  error // Serve's error other than http.ErrServerClosed; read after done
}

// ListenMetrics listens on addr (port 0 picks a free port; Addr tells
// which) and serves g at /metrics.
func ListenMetrics(addr netip.AddrPort, g prometheus.Gatherer) (*MetricsServer, error) {
	if !addr.IsValid() {
		return nil, fmt.Errorf("api: metrics address %v: want IP:PORT", addr)
	}
	if g == nil {
		return nil, errors.New("api: metrics: no prometheus.Gatherer")
	}
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		return nil, err
	}
	m := &MetricsServer{
		ln:   ln,
		srv:  &http.Server{Handler: newRouter([]route{metricsRoute(g)}), ReadHeaderTimeout: 10 * time.Second},
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.serveErr = err
		}
	}()
	return m, nil
}

// Addr returns the address served.
func (m *MetricsServer) Addr() net.Addr { return m.ln.Addr() }

// Close stops serving and waits for the serving goroutine. It returns
// the error that stopped serving early, if any. It is idempotent.
func (m *MetricsServer) Close() error {
	m.closeOnce.Do(func() { shutdown(m.srv, m.done) })
	return m.serveErr
}
