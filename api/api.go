// Package api is the control interface of a running ustack: HTTP over a
// unix socket (file mode 0600, so only its owner can use it). The server
// side serves a Source; Client is what `ustack ports` and `ustack forward`
// use.
//
// Routes:
//
//	GET  /v1/ports     per-protocol allocator snapshots, as JSON
//	GET  /v1/health    "ok"
//
// Users can add routes with Server.Handle (the command line adds
// /metrics, and the sandbox forwards and stats).
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/ustacknet/ustack/portalloc"
)

// Source is what the API reports on.
type Source interface {
	Ports() []portalloc.Snapshot
}

// Server serves the API on a unix socket.
type Server struct {
	path string
	mux  *http.ServeMux
	ln   net.Listener
	srv  *http.Server
	done chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Listen creates the socket at path with mode 0600 and starts serving src.
// A stale socket file (nobody listening) is replaced; a live one is an
// error, as is any other file at path.
func Listen(path string, src Source) (*Server, error) {
	if path == "" {
		return nil, errors.New("api: empty socket path")
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("api: %s exists and is not a socket; choose another --api path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("api: %s is in use by another running ustack; choose another --api path", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("api: removing stale socket: %w", err)
		}
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("api: listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api: %w", err)
	}
	s := &Server{path: path, mux: http.NewServeMux(), ln: ln, done: make(chan struct{})}
	s.mux.HandleFunc("GET /v1/ports", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, src.Ports())
	})
	s.mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// Handle adds a route, as http.ServeMux.HandleFunc.
func (s *Server) Handle(pattern string, h http.HandlerFunc) { s.mux.HandleFunc(pattern, h) }

// Path returns the socket path.
func (s *Server) Path() string { return s.path }

// Close stops serving, waits for the serving goroutine and removes the
// socket file. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
		<-s.done
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.closeErr = err
		}
	})
	return s.closeErr
}

// WriteJSON writes v as indented JSON with the status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteError writes {"error": msg} with the status code.
func WriteError(w http.ResponseWriter, code int, err error) {
	WriteJSON(w, code, map[string]string{"error": err.Error()})
}

// Client talks to a Server.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{path: path, hc: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (if not nil). A non-2xx answer becomes an error carrying the
// server's message.
func (c *Client) Do(ctx context.Context, method, route string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytesReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://ustack"+route, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("no ustack is serving the API at %s (is it running with --api %s?): %w", c.path, c.path, err)
		}
		return fmt.Errorf("api %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("api %s %s: %s", method, route, resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("api %s %s: decoding answer: %w", method, route, err)
		}
	}
	return nil
}

// Ports fetches the allocator snapshots.
func (c *Client) Ports(ctx context.Context) ([]portalloc.Snapshot, error) {
	var out []portalloc.Snapshot
	err := c.Do(ctx, http.MethodGet, "/v1/ports", nil, &out)
	return out, err
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }
