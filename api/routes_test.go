package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/portfwd"
	"github.com/ustacknet/ustack/portfwd/portfwdtest"
)

// testServer serves a full Config on a socket in a temporary directory.
type testServer struct {
	srv     *Server
	cl      *Client
	ports   *portalloc.Allocator
	fwd     *portfwdtest.Manager
	counter prometheus.Counter
	stats   GatewayStats
}

// newTestServer serves over tr: a unix socket (skipped on Windows,
// which does not use them) or the token transport.
func newTestServer(t *testing.T, tr transport) *testServer {
	t.Helper()
	if tr == unixSocket && defaultTransport != unixSocket {
		t.Skip("unix sockets are not used on this system")
	}
	a, err := portalloc.New(portalloc.Config{TCP: portalloc.PoolConfig{Range: portalloc.Range{First: 40000, Last: 40009}}})
	if err != nil {
		t.Fatal(err)
	}
	a.Pool(portalloc.TCP).Allocate(portalloc.Request{})
	ts := &testServer{
		ports:   a,
		fwd:     portfwdtest.NewManager(),
		counter: prometheus.NewCounter(prometheus.CounterOpts{Name: "apitest_things_total", Help: "Things counted by the test."}),
		stats:   GatewayStats{TCPFlows: 1, UDPFlows: 2, DNSQueries: 3, Denied: 4, Refused: 5, Inbound: 6, Live: 7},
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(ts.counter)
	ts.counter.Add(3)
	ts.srv, err = listen(filepath.Join(t.TempDir(), "api.sock"), Config{
		Ports:    fakeSource{a},
		Forwards: ts.fwd,
		Stats:    func() GatewayStats { return ts.stats },
		Metrics:  reg,
	}, tr)
	if err != nil {
		t.Fatal(err)
	}
	ts.cl = newClient(ts.srv.Path(), tr)
	t.Cleanup(func() {
		ts.cl.Close()
		if err := ts.srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return ts
}

// forTransports runs test over a unix socket and over the token
// transport (Windows').
func forTransports(t *testing.T, test func(*testing.T, transport)) {
	t.Run("unix", func(t *testing.T) { test(t, unixSocket) })
	t.Run("token", func(t *testing.T) { test(t, tcpToken) })
}

// fwdEqual compares Forwards (netip.AddrPort has unexported fields).
var fwdEqual = cmp.Comparer(func(a, b portfwd.Forward) bool { return a == b })

func mustParse(t *testing.T, spec string) portfwd.Forward {
	t.Helper()
	f, err := portfwd.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestClientRoundTrip runs every route through the typed client.
func TestClientRoundTrip(t *testing.T) { forTransports(t, testClientRoundTrip) }

func testClientRoundTrip(t *testing.T, tr transport) {
	ts := newTestServer(t, tr)
	ctx := context.Background()

	if err := ts.cl.Health(ctx); err != nil {
		t.Errorf("Health: %v", err)
	}

	ports, err := ts.cl.Ports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ts.ports.Snapshots(), ports); diff != "" {
		t.Errorf("Ports (-want +got):\n%s", diff)
	}

	st, err := ts.cl.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Stats{GatewayStats: ts.stats, Procs: runtime.GOMAXPROCS(0)}, st); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}

	text, err := ts.cl.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# TYPE apitest_things_total counter\n", "\napitest_things_total 3\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("Metrics lack %q:\n%s", want, text)
		}
	}

	fs, err := ts.cl.Forwards(ctx)
	if err != nil || len(fs) != 0 {
		t.Fatalf("Forwards with none: %v, %v; want none", fs, err)
	}
	// The sandbox's default host address comes back filled in.
	f := mustParse(t, "8080:80")
	g := mustParse(t, "[::1]:5353:53/udp")
	for _, want := range []portfwd.Forward{f, g} {
		got, err := ts.cl.AddForward(ctx, want)
		if err != nil {
			t.Fatalf("AddForward %s: %v", want, err)
		}
		if got != want {
			t.Errorf("AddForward %s returned %s", want, got)
		}
	}
	fs, err = ts.cl.Forwards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ts.fwd.Forwards(), fs, fwdEqual); diff != "" {
		t.Errorf("Forwards (-want +got):\n%s", diff)
	}
	got, err := ts.cl.RemoveForward(ctx, f)
	if err != nil || got != f {
		t.Fatalf("RemoveForward %s: %s, %v", f, got, err)
	}
	if diff := cmp.Diff([]portfwd.Forward{g}, ts.fwd.Forwards(), fwdEqual); diff != "" {
		t.Errorf("forwards after RemoveForward (-want +got):\n%s", diff)
	}
}

// TestClientErrors: the manager's errors reach the client as *Error with
// the manager's message, a status and code, and errors.Is works.
func TestClientErrors(t *testing.T) { forTransports(t, testClientErrors) }

func testClientErrors(t *testing.T, tr transport) {
	ts := newTestServer(t, tr)
	ctx := context.Background()
	f := mustParse(t, "127.0.0.1:8080:80")
	if _, err := ts.cl.AddForward(ctx, f); err != nil {
		t.Fatal(err)
	}
	inUse := fmt.Errorf("sandbox: forward %s: host tcp port 8081 is already in use by another program: %w", f,
		&net.OpError{Op: "listen", Net: "tcp4", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)})
	closed := fmt.Errorf("sandbox: forward %s: gateway closed: %w", f, net.ErrClosed)
	other := errors.New("sandbox: forward: something else")
	_, parseErr := portfwd.Parse("127.0.0.1:8080:80/sctp")

	tests := []struct {
		name   string
		call   func() error
		status int
		code   string
		msg    string
		is     error
	}{
		{"add twice", func() error { _, err := ts.cl.AddForward(ctx, f); return err },
			409, CodeExists, fmt.Sprintf("portfwdtest: forward %s: forward already exists", f), portfwd.ErrExists},
		{"remove missing", func() error { _, err := ts.cl.RemoveForward(ctx, mustParse(t, "9090:90")); return err },
			404, CodeNotFound, "portfwdtest: forward 127.0.0.1:9090:90/tcp: no such forward", portfwd.ErrNotFound},
		{"host port in use", func() error {
			ts.fwd.FailNext(inUse)
			_, err := ts.cl.AddForward(ctx, mustParse(t, "8081:80"))
			return err
		}, 409, CodeInUse, inUse.Error(), syscall.EADDRINUSE},
		{"gateway closed", func() error {
			ts.fwd.FailNext(closed)
			_, err := ts.cl.AddForward(ctx, mustParse(t, "8082:80"))
			return err
		}, 503, CodeClosed, closed.Error(), net.ErrClosed},
		{"other error", func() error {
			ts.fwd.FailNext(other)
			_, err := ts.cl.AddForward(ctx, mustParse(t, "8083:80"))
			return err
		}, 500, CodeInternal, other.Error(), nil},
		// A Forward the parser would refuse: the server answers the
		// parser's own message.
		{"bad protocol", func() error {
			_, err := ts.cl.AddForward(ctx, portfwd.Forward{Proto: "sctp", Host: f.Host, GuestPort: 80})
			return err
		}, 400, CodeBadRequest, parseErr.Error(), ErrBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want an *Error", err, err)
			}
			if diff := cmp.Diff(&Error{Status: tc.status, Code: tc.code, Message: tc.msg}, e); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if err.Error() != tc.msg {
				t.Errorf("message %q, want %q", err.Error(), tc.msg)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
			for _, other := range []error{portfwd.ErrExists, portfwd.ErrNotFound, syscall.EADDRINUSE, net.ErrClosed, ErrBadRequest, ErrNotServed} {
				if other != tc.is && errors.Is(err, other) {
					t.Errorf("errors.Is(%v, %v) = true", err, other)
				}
			}
		})
	}
	if diff := cmp.Diff([]portfwd.Forward{f}, ts.fwd.Forwards(), fwdEqual); diff != "" {
		t.Errorf("forwards after the failures (-want +got):\n%s", diff)
	}
}

// answer is what a raw request got.
type answer struct {
	Status int
	Allow  string
	Body   errorBody
}

// raw sends a request as any HTTP client could, and decodes an error
// answer.
func raw(t *testing.T, cl *Client, method, target string) answer {
	t.Helper()
	resp, err := cl.send(context.Background(), method, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{Status: resp.StatusCode, Allow: resp.Header.Get("Allow")}
	if resp.StatusCode/100 != 2 {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: error answer of type %q, want application/json", method, target, ct)
		}
		if err := json.Unmarshal(b, &a.Body); err != nil {
			t.Errorf("%s %s: error answer %q is not JSON: %v", method, target, b, err)
		}
	}
	return a
}

// TestBadInput sends bad requests to every route: each gets a status, a
// code and a message naming what is wrong and what is allowed.
func TestBadInput(t *testing.T) { forTransports(t, testBadInput) }

func testBadInput(t *testing.T, tr transport) {
	ts := newTestServer(t, tr)
	const routes = "the routes are GET /v1/health, GET /v1/ports, GET|POST|DELETE /v1/forwards, GET /v1/stats, GET /metrics"
	_, badSpec := portfwd.Parse("8080")
	_, badPort := portfwd.Parse("8080:0/udp")
	tests := []struct {
		method, target string
		want           answer
	}{
		{"GET", "/v2/ports", answer{404, "", errorBody{"api: no route /v2/ports: " + routes, CodeNoRoute}}},
		{"GET", "/", answer{404, "", errorBody{"api: no route /: " + routes, CodeNoRoute}}},
		{"POST", "/v1/health", answer{405, "GET", errorBody{"api: POST /v1/health: method not allowed; /v1/health takes GET", CodeMethod}}},
		{"DELETE", "/v1/ports", answer{405, "GET", errorBody{"api: DELETE /v1/ports: method not allowed; /v1/ports takes GET", CodeMethod}}},
		{"PUT", "/v1/forwards", answer{405, "GET, POST, DELETE", errorBody{"api: PUT /v1/forwards: method not allowed; /v1/forwards takes GET, POST, DELETE", CodeMethod}}},
		{"POST", "/v1/stats", answer{405, "GET", errorBody{"api: POST /v1/stats: method not allowed; /v1/stats takes GET", CodeMethod}}},
		{"POST", "/metrics", answer{405, "GET", errorBody{"api: POST /metrics: method not allowed; /metrics takes GET", CodeMethod}}},
		{"GET", "/v1/health?x=1", answer{400, "", errorBody{"api: GET /v1/health takes no parameters; got ?x=1", CodeBadRequest}}},
		{"GET", "/v1/ports?proto=tcp", answer{400, "", errorBody{"api: GET /v1/ports takes no parameters; got ?proto=tcp", CodeBadRequest}}},
		{"GET", "/v1/stats?all", answer{400, "", errorBody{"api: GET /v1/stats takes no parameters; got ?all", CodeBadRequest}}},
		{"GET", "/v1/forwards?spec=8080:80", answer{400, "", errorBody{"api: GET /v1/forwards takes no parameters; got ?spec=8080:80", CodeBadRequest}}},
		{"POST", "/v1/forwards", answer{400, "", errorBody{"api: POST /v1/forwards: missing parameter spec: want ?spec=[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]", CodeBadRequest}}},
		{"DELETE", "/v1/forwards", answer{400, "", errorBody{"api: DELETE /v1/forwards: missing parameter spec: want ?spec=[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]", CodeBadRequest}}},
		{"POST", "/v1/forwards?spec=8080", answer{400, "", errorBody{badSpec.Error(), CodeBadRequest}}},
		{"DELETE", "/v1/forwards?spec=8080:0/udp", answer{400, "", errorBody{badPort.Error(), CodeBadRequest}}},
		{"POST", "/v1/forwards?spec=8080:80&spec=8081:81", answer{400, "", errorBody{"api: POST /v1/forwards: 2 spec parameters: want one, [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]", CodeBadRequest}}},
		{"POST", "/v1/forwards?spec=8080:80&proto=udp", answer{400, "", errorBody{"api: POST /v1/forwards: unknown parameter \"proto\": the only parameter is spec=[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]", CodeBadRequest}}},
		{"DELETE", "/v1/forwards?specs=8080:80", answer{400, "", errorBody{"api: DELETE /v1/forwards: unknown parameter \"specs\": the only parameter is spec=[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]", CodeBadRequest}}},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, raw(t, ts.cl, tc.method, tc.target)); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
	if fs := ts.fwd.Forwards(); len(fs) != 0 {
		t.Errorf("bad requests added forwards: %v", fs)
	}
	// HEAD is served as GET.
	if got := raw(t, ts.cl, "HEAD", "/v1/ports"); got.Status != 200 {
		t.Errorf("HEAD /v1/ports: status %d, want 200", got.Status)
	}
}

// TestNotServed: the zero Config serves health only; every other route
// says it is not served here, and the client's error matches
// ErrNotServed.
func TestNotServed(t *testing.T) {
	srv, err := Listen(filepath.Join(t.TempDir(), "api.sock"), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cl := NewClient(srv.Path())
	defer cl.Close()
	ctx := context.Background()
	if err := cl.Health(ctx); err != nil {
		t.Errorf("Health: %v", err)
	}
	f := mustParse(t, "8080:80")
	const sandbox = ": they are a sandbox's (ustack sandbox --api PATH)"
	tests := []struct {
		name string
		call func() error
		msg  string
	}{
		{"ports", func() error { _, err := cl.Ports(ctx); return err }, "api: GET /v1/ports: this ustack does not serve a port allocator"},
		{"forwards", func() error { _, err := cl.Forwards(ctx); return err }, "api: GET /v1/forwards: this ustack does not serve port forwards" + sandbox},
		{"add forward", func() error { _, err := cl.AddForward(ctx, f); return err }, "api: POST /v1/forwards: this ustack does not serve port forwards" + sandbox},
		{"remove forward", func() error { _, err := cl.RemoveForward(ctx, f); return err }, "api: DELETE /v1/forwards: this ustack does not serve port forwards" + sandbox},
		{"stats", func() error { _, err := cl.Stats(ctx); return err }, "api: GET /v1/stats: this ustack does not serve gateway stats" + sandbox},
		{"metrics", func() error { _, err := cl.Metrics(ctx); return err }, "api: GET /metrics: this ustack does not serve metrics"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want an *Error", err, err)
			}
			if diff := cmp.Diff(&Error{Status: 501, Code: CodeNotServed, Message: tc.msg}, e); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if !errors.Is(err, ErrNotServed) {
				t.Errorf("errors.Is(%v, ErrNotServed) = false", err)
			}
		})
	}
}

// TestClientNonJSONError: an error answer that is not the API's JSON
// (from something else listening there) still gives an *Error with the
// status.
func TestClientNonJSONError(t *testing.T) {
	if defaultTransport != unixSocket {
		t.Skip("unix sockets are not used on this system")
	}
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	defer func() { srv.Close(); <-done }()
	cl := newClient(path, unixSocket)
	defer cl.Close()
	_, err = cl.Ports(context.Background())
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want an *Error", err, err)
	}
	if diff := cmp.Diff(&Error{Status: 404, Message: "api GET /v1/ports: 404 Not Found"}, e); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
}

// TestMetricsServer serves /metrics over TCP on loopback (a free port),
// as --metrics does.
func TestMetricsServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "apitest_level", Help: "A level."})
	g.Set(42)
	reg.MustRegister(g)
	m, err := ListenMetrics(netip.MustParseAddrPort("127.0.0.1:0"), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := hc.Get("http://" + m.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, text := get("/metrics"); code != 200 || !strings.Contains(text, "\napitest_level 42\n") {
		t.Errorf("GET /metrics: %d\n%s", code, text)
	}
	if code, text := get("/v1/ports"); code != 404 || !strings.Contains(text, "the routes are GET /metrics") {
		t.Errorf("GET /v1/ports on the metrics server: %d %s", code, text)
	}
	hc.CloseIdleConnections()
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := hc.Get("http://" + m.Addr().String() + "/metrics"); err == nil {
		t.Error("GET after Close succeeded")
	}

	for _, tc := range []struct {
		name string
		addr netip.AddrPort
		g    prometheus.Gatherer
		want string
	}{
		{"no address", netip.AddrPort{}, reg, "want IP:PORT"},
		{"no gatherer", netip.MustParseAddrPort("127.0.0.1:0"), nil, "no prometheus.Gatherer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m, err := ListenMetrics(tc.addr, tc.g); err == nil || !strings.Contains(err.Error(), tc.want) {
				if m != nil {
					m.Close()
				}
				t.Errorf("ListenMetrics(%v): %v, want an error with %q", tc.addr, err, tc.want)
			}
		})
	}
}
