// Package api is the control interface of a running ustack: HTTP over a
// unix socket (file mode 0600, so only its owner can use it), or on
// Windows over a localhost TCP port with a token (see Listen). The server
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

	"github.com/ustacknet/ustack/internal/errno"
	"github.com/ustacknet/ustack/portalloc"
)

// Source is what the API reports on.
type Source interface {
	Ports() []portalloc.Snapshot
}

// Server serves the API on a unix socket, or on Windows on a localhost
// TCP port guarded by a token (see Listen).
type Server struct {
	path   string
	mux    *http.ServeMux
	ln     net.Listener
	srv    *http.Server
	done   chan struct{}
	remove func() error // removes the socket or token file

	closeOnce sync.Once
	closeErr  error
}

// Listen serves src at path, which names the API for clients (NewClient).
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
func Listen(path string, src Source) (*Server, error) {
	return listen(path, src, defaultTransport)
}

// listen is Listen over the transport t.
func listen(path string, src Source, t transport) (*Server, error) {
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
	s := &Server{path: path, mux: http.NewServeMux(), ln: ep.ln, done: make(chan struct{}), remove: ep.remove}
	s.mux.HandleFunc("GET /v1/ports", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, src.Ports())
	})
	s.mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	var h http.Handler = s.mux
	if ep.token != "" {
		h = requireToken(ep.token, s.mux)
	}
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		s.srv.Serve(ep.ln)
	}()
	return s, nil
}

// Handle adds a route, as http.ServeMux.HandleFunc.
func (s *Server) Handle(pattern string, h http.HandlerFunc) { s.mux.HandleFunc(pattern, h) }

// Path returns the socket (or token file) path.
func (s *Server) Path() string { return s.path }

// Close stops serving, waits for the serving goroutine and removes the
// socket or token file. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
		<-s.done
		if err := s.remove(); err != nil && !errors.Is(err, os.ErrNotExist) {
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
	t    transport
	hc   *http.Client
}

// NewClient returns a client for the API at path (see Listen).
func NewClient(path string) *Client { return newClient(path, defaultTransport) }

func newClient(path string, t transport) *Client {
	c := &Client{path: path, t: t, hc: &http.Client{Timeout: 10 * time.Second}}
	if t == unixSocket {
		c.hc.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
	} else {
		c.hc.Transport = &http.Transport{}
	}
	return c
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
	base, token := "http://ustack", ""
	if c.t == tcpToken {
		tf, err := readTokenFile(c.path)
		if err != nil {
			return c.dialError(err)
		}
		base, token = "http://"+tf.Addr, tf.Token
	}
	req, err := http.NewRequestWithContext(ctx, method, base+route, rd)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.dialError(err)
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

// dialError explains a failure to reach the server.
func (c *Client) dialError(err error) error {
	if errors.Is(err, os.ErrNotExist) || errno.Matches(err, syscall.ENOENT) || errno.Matches(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("no ustack is serving the API at %s (is it running with --api %s?): %w", c.path, c.path, err)
	}
	return fmt.Errorf("api %s: %w", c.path, err)
}

// Ports fetches the allocator snapshots.
func (c *Client) Ports(ctx context.Context) ([]portalloc.Snapshot, error) {
	var out []portalloc.Snapshot
	err := c.Do(ctx, http.MethodGet, "/v1/ports", nil, &out)
	return out, err
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }
