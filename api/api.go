// Package api is the control interface of a running ustack: HTTP over a
// unix socket (file mode 0600, so only its owner can use it), or on
// Windows over a localhost TCP port with a token (see Listen). Server
// serves what a Config names; Client is the typed client that `ustack
// ports`, `ustack forward` and tests use. Routes, their JSON types and
// their errors are defined here once, for both sides.
//
// Routes:
//
//	GET    /v1/health              "ok"
//	GET    /v1/ports               per-protocol allocator snapshots ([]portalloc.Snapshot)
//	GET    /v1/forwards            the active forwards, as specs ([]string)
//	POST   /v1/forwards?spec=SPEC  add a forward; answers its spec (201)
//	DELETE /v1/forwards?spec=SPEC  remove a forward; answers its spec
//	GET    /v1/stats               a sandbox gateway's counters (Stats)
//	GET    /metrics                Prometheus metrics, in the text format
//
// SPEC is a port forward as portfwd.Parse reads it,
// [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]. An error is answered as JSON,
// {"error": MESSAGE, "code": CODE} (see Error), with a status code that
// says its kind: 400 bad input, 401 no token, 404 no such route or
// forward, 405 a method the route does not take, 409 a forward that
// exists or a host port in use, 501 a route this instance does not
// serve (forwards and stats are a sandbox's), 503 shutting down.
package api

import (
	"context"
	"errors"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/portfwd"
)

// PortsSource gives the allocator snapshots of GET /v1/ports
// (stack.Stack and sandbox.Gateway implement it).
type PortsSource interface {
	Ports() []portalloc.Snapshot
}

// Config says what a Server serves. A nil field leaves its routes
// unserved: they answer 501 with a message saying so. The zero Config
// serves /v1/health only.
type Config struct {
	// Ports serves GET /v1/ports.
	Ports PortsSource
	// Forwards serves GET, POST and DELETE /v1/forwards (a sandbox
	// gateway).
	Forwards portfwd.Manager
	// Stats serves GET /v1/stats: it returns a sandbox gateway's
	// counters (sandbox.Stats converts to GatewayStats). The answer adds
	// this process's GOMAXPROCS.
	Stats func() GatewayStats
	// Metrics serves GET /metrics, in the Prometheus text format (a
	// *prometheus.Registry, such as metrics.NewRegistry's).
	Metrics prometheus.Gatherer
}

// Server serves the API on a unix socket, or on Windows on a localhost
// TCP port guarded by a token (see Listen).
type Server struct {
	path   string
	srv    *http.Server
	done   chan struct{}
	remove func() error // removes the socket or token file

	closeOnce sync.Once
	closeErr  error
}

// Listen serves cfg at path, which names the API for clients (NewClient).
//
// On Unix systems path is a unix socket, created with mode 0600. On
// Windows, where AF_UNIX sockets may be missing, the server listens on a
// free TCP port of 127.0.0.1 and writes path as a token file (mode 0600,
// which Windows maps to a read-only flag: keep it in a directory only its
// owner can read, such as the user's profile) holding the address and a
// random 256-bit token; every request must carry the token as
// "Authorization: Bearer TOKEN", or gets 401.
//
// A stale file at path (nobody serving) is replaced; a live one is an
// error, as is any other file at path.
func Listen(path string, cfg Config) (*Server, error) {
	return listen(path, cfg, defaultTransport)
}

// listen is Listen over the transport t.
func listen(path string, cfg Config, t transport) (*Server, error) {
	if path == "" {
		return nil, errors.New("api: empty socket path")
	}
	var (
		ep  endpoint
		err error
	)
	if t == tcpToken {
		ep, err = listenToken(path)
	} else {
		ep, err = listenUnix(path)
	}
	if err != nil {
		return nil, err
	}
	var h http.Handler = newRouter(controlRoutes(cfg))
	if ep.token != "" {
		h = requireToken(ep.token, h)
	}
	s := &Server{path: path, done: make(chan struct{}), remove: ep.remove,
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		defer close(s.done)
		s.srv.Serve(ep.ln)
	}()
	return s, nil
}

// Path returns the socket (or token file) path.
func (s *Server) Path() string { return s.path }

// Close stops serving, waits for the serving goroutine and removes the
// socket or token file. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		shutdown(s.srv, s.done)
		if err := s.remove(); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.closeErr = err
		}
	})
	return s.closeErr
}

// shutdown stops srv, gracefully for up to 2 seconds, and waits for its
// Serve to return (done closed).
func shutdown(srv *http.Server, done <-chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
	<-done
}
