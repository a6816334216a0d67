package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/ustacknet/ustack/internal/errno"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/portfwd"
)

// Client is a typed client of a Server. Its methods are safe for
// concurrent use. An error answer comes back as an *Error (see Error for
// what errors.Is matches); a server that cannot be reached gives an error
// saying so, which wraps the dial error.
type Client struct {
	path string
	t    transport
	hc   *http.Client
}

// clientTimeout bounds one request, answer included.
const clientTimeout = 10 * time.Second

// maxAnswer bounds the size of an answer read.
const maxAnswer = 64 << 20

// NewClient returns a client for the API at path (see Listen). It does
// not connect: each call does.
func NewClient(path string) *Client { return newClient(path, defaultTransport) }

func newClient(path string, t transport) *Client {
	c := &Client{path: path, t: t, hc: &http.Client{Timeout: clientTimeout}}
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

// Close releases the client's idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Health checks that the server answers.
func (c *Client) Health(ctx context.Context) error {
	body, err := c.do(ctx, http.MethodGet, RouteHealth, nil)
	if err != nil {
		return err
	}
	if string(body) != "ok\n" {
		return fmt.Errorf("api GET %s: answer %q, want \"ok\"", RouteHealth, body)
	}
	return nil
}

// Ports fetches the allocator snapshots, one per protocol.
func (c *Client) Ports(ctx context.Context) ([]portalloc.Snapshot, error) {
	var out []portalloc.Snapshot
	err := c.doJSON(ctx, http.MethodGet, RoutePorts, nil, &out)
	return out, err
}

// Forwards lists a sandbox's active forwards, sorted.
func (c *Client) Forwards(ctx context.Context) ([]portfwd.Forward, error) {
	var specs []string
	if err := c.doJSON(ctx, http.MethodGet, RouteForwards, nil, &specs); err != nil {
		return nil, err
	}
	out := make([]portfwd.Forward, len(specs))
	for i, s := range specs {
		f, err := portfwd.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("api GET %s: decoding answer: %w", RouteForwards, err)
		}
		out[i] = f
	}
	return out, nil
}

// AddForward starts forwarding f in a sandbox and returns the forward
// as the sandbox reads it (HOSTADDR filled in). An error matches
// portfwd.ErrExists if f is active already and syscall.EADDRINUSE if
// its host address is taken.
func (c *Client) AddForward(ctx context.Context, f portfwd.Forward) (portfwd.Forward, error) {
	return c.changeForward(ctx, http.MethodPost, f)
}

// RemoveForward stops forwarding f in a sandbox and closes its
// connections. It returns the forward removed. An error matches
// portfwd.ErrNotFound if f is not active.
func (c *Client) RemoveForward(ctx context.Context, f portfwd.Forward) (portfwd.Forward, error) {
	return c.changeForward(ctx, http.MethodDelete, f)
}

func (c *Client) changeForward(ctx context.Context, method string, f portfwd.Forward) (portfwd.Forward, error) {
	var spec string
	if err := c.doJSON(ctx, method, RouteForwards+"?"+url.Values{SpecParam: {f.String()}}.Encode(), nil, &spec); err != nil {
		return portfwd.Forward{}, err
	}
	got, err := portfwd.Parse(spec)
	if err != nil {
		return portfwd.Forward{}, fmt.Errorf("api %s %s: decoding answer: %w", method, RouteForwards, err)
	}
	return got, nil
}

// Stats fetches a sandbox gateway's counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var out Stats
	err := c.doJSON(ctx, http.MethodGet, RouteStats, nil, &out)
	return out, err
}

// Metrics fetches the Prometheus metrics, in the text exposition format.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	body, err := c.do(ctx, http.MethodGet, RouteMetrics, http.Header{"Accept": {"text/plain"}})
	return string(body), err
}

// doJSON sends a request and decodes its JSON answer into out.
func (c *Client) doJSON(ctx context.Context, method, route string, hdr http.Header, out any) error {
	body, err := c.do(ctx, method, route, hdr)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("api %s %s: decoding answer: %w", method, route, err)
	}
	return nil
}

// do sends a request without a body and returns the answer's body. A
// non-2xx answer becomes an *Error.
func (c *Client) do(ctx context.Context, method, route string, hdr http.Header) ([]byte, error) {
	resp, err := c.send(ctx, method, route, hdr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("api %s %s: reading answer: %w", method, route, err)
	}
	if resp.StatusCode/100 != 2 {
		var e errorBody
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return nil, &Error{Status: resp.StatusCode, Code: e.Code, Message: e.Error}
		}
		return nil, &Error{Status: resp.StatusCode, Message: fmt.Sprintf("api %s %s: %s", method, route, resp.Status)}
	}
	return data, nil
}

// send sends a request without a body to target (a route with its
// query) and returns the answer, whose body the caller closes.
func (c *Client) send(ctx context.Context, method, target string, hdr http.Header) (*http.Response, error) {
	base, token := "http://ustack", ""
	if c.t == tcpToken {
		tf, err := readTokenFile(c.path)
		if err != nil {
			return nil, c.dialError(err)
		}
		base, token = "http://"+tf.Addr, tf.Token
	}
	req, err := http.NewRequestWithContext(ctx, method, base+target, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.dialError(err)
	}
	return resp, nil
}

// dialError explains a failure to reach the server.
func (c *Client) dialError(err error) error {
	if errors.Is(err, os.ErrNotExist) || errno.Matches(err, syscall.ENOENT) || errno.Matches(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("no ustack is serving the API at %s (is it running with --api %s?): %w", c.path, c.path, err)
	}
	return fmt.Errorf("api %s: %w", c.path, err)
}
