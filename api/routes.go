package api

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/ustacknet/ustack/portfwd"
)

// The API's routes (see the package doc).
const (
	RouteHealth   = "/v1/health"
	RoutePorts    = "/v1/ports"
	RouteForwards = "/v1/forwards"
	RouteStats    = "/v1/stats"
	RouteMetrics  = "/metrics"
)

// SpecParam is the query parameter of POST and DELETE /v1/forwards: a
// forward's spec, as portfwd.Parse reads it.
const SpecParam = "spec"

// GatewayStats are a sandbox gateway's counters, as sandbox.Stats (which
// has the same fields and converts: GatewayStats(gw.Stats())).
type GatewayStats struct {
	TCPFlows   uint64 `json:"tcp_flows"`   // guest TCP connections carried
	UDPFlows   uint64 `json:"udp_flows"`   // guest UDP flows carried
	DNSQueries uint64 `json:"dns_queries"` // queries to the DNS address
	Denied     uint64 `json:"denied"`      // flows refused by policy
	Refused    uint64 `json:"refused"`     // flows refused over the flow limit or failed to dial
	Inbound    uint64 `json:"inbound"`     // connections or flows through forwards
	Live       int64  `json:"live"`        // flows open now
}

// Stats is the answer of GET /v1/stats: one JSON object with the
// gateway's counters and procs.
type Stats struct {
	GatewayStats
	Procs int `json:"procs"` // GOMAXPROCS of the serving process (sandbox --procs)
}

// route is one path and the handler of each method it takes.
type route struct {
	path    string
	methods []method
}

type method struct {
	name string
	h    http.HandlerFunc
}

// router serves routes. Any other path gets 404 naming the routes, any
// other method 405 naming the route's methods; HEAD is served as GET.
type router struct {
	routes map[string]route
	list   string // "GET /v1/health, ...", for messages
}

func newRouter(routes []route) *router {
	rt := &router{routes: make(map[string]route)}
	var list []string
	for _, r := range routes {
		rt.routes[r.path] = r
		list = append(list, strings.Join(r.methodNames(), "|")+" "+r.path)
	}
	rt.list = strings.Join(list, ", ")
	return rt
}

func (r route) methodNames() []string {
	names := make([]string, len(r.methods))
	for i, m := range r.methods {
		names[i] = m.name
	}
	return names
}

func (rt *router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r, ok := rt.routes[req.URL.Path]
	if !ok {
		writeError(w, &Error{Status: http.StatusNotFound, Code: CodeNoRoute,
			Message: fmt.Sprintf("api: no route %s: the routes are %s", req.URL.Path, rt.list)})
		return
	}
	name := req.Method
	if name == http.MethodHead {
		name = http.MethodGet
	}
	for _, m := range r.methods {
		if m.name == name {
			m.h(w, req)
			return
		}
	}
	allowed := r.methodNames()
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeError(w, &Error{Status: http.StatusMethodNotAllowed, Code: CodeMethod,
		Message: fmt.Sprintf("api: %s %s: method not allowed; %s takes %s", req.Method, r.path, r.path, strings.Join(allowed, ", "))})
}

// badRequest is a 400 answer.
func badRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: fmt.Sprintf(format, args...)}
}

// noParams refuses a request with query parameters (routes without any).
func noParams(req *http.Request) *Error {
	if req.URL.RawQuery == "" {
		return nil
	}
	return badRequest("api: %s %s takes no parameters; got ?%s", req.Method, req.URL.Path, req.URL.RawQuery)
}

// notServed is a 501 answer for a route whose Config field is nil.
func notServed(req *http.Request, what string) *Error {
	return &Error{Status: http.StatusNotImplemented, Code: CodeNotServed,
		Message: fmt.Sprintf("api: %s %s: this ustack does not serve %s", req.Method, req.URL.Path, what)}
}

// get is a GET route without parameters: h answers, or returns an error.
func get(path string, h func(w http.ResponseWriter, req *http.Request) *Error) route {
	return route{path: path, methods: []method{{http.MethodGet, func(w http.ResponseWriter, req *http.Request) {
		if e := noParams(req); e != nil {
			writeError(w, e)
			return
		}
		if e := h(w, req); e != nil {
			writeError(w, e)
		}
	}}}}
}

// controlRoutes are the routes of the control socket over cfg.
func controlRoutes(cfg Config) []route {
	const sandboxOnly = "%s: they are a sandbox's (ustack sandbox --api PATH)"
	return []route{
		get(RouteHealth, func(w http.ResponseWriter, req *http.Request) *Error {
			io.WriteString(w, "ok\n")
			return nil
		}),
		get(RoutePorts, func(w http.ResponseWriter, req *http.Request) *Error {
			if cfg.Ports == nil {
				return notServed(req, "a port allocator")
			}
			writeJSON(w, http.StatusOK, cfg.Ports.Ports())
			return nil
		}),
		forwardsRoute(cfg.Forwards, func(req *http.Request) *Error {
			return notServed(req, fmt.Sprintf(sandboxOnly, "port forwards"))
		}),
		get(RouteStats, func(w http.ResponseWriter, req *http.Request) *Error {
			if cfg.Stats == nil {
				return notServed(req, fmt.Sprintf(sandboxOnly, "gateway stats"))
			}
			writeJSON(w, http.StatusOK, Stats{GatewayStats: cfg.Stats(), Procs: runtime.GOMAXPROCS(0)})
			return nil
		}),
		metricsRoute(cfg.Metrics),
	}
}

// metricsRoute serves g at GET /metrics, or answers 501 if g is nil.
func metricsRoute(g prometheus.Gatherer) route {
	h := func(w http.ResponseWriter, req *http.Request) {
		writeError(w, notServed(req, "metrics"))
	}
	if g != nil {
		h = promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP
	}
	return route{path: RouteMetrics, methods: []method{{http.MethodGet, h}}}
}

// forwardsRoute is GET, POST and DELETE /v1/forwards over m; with m nil
// every method answers unserved's error.
func forwardsRoute(m portfwd.Manager, unserved func(*http.Request) *Error) route {
	// serve runs h once the request is checked and m is known.
	serve := func(h func(w http.ResponseWriter, req *http.Request) *Error) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			var e *Error
			if m == nil {
				e = unserved(req)
			} else {
				e = h(w, req)
			}
			if e != nil {
				writeError(w, e)
			}
		}
	}
	change := func(do func(portfwd.Forward) error, okCode int) http.HandlerFunc {
		return serve(func(w http.ResponseWriter, req *http.Request) *Error {
			f, e := specOf(req)
			if e != nil {
				return e
			}
			if err := do(f); err != nil {
				return forwardError(err)
			}
			writeJSON(w, okCode, f.String())
			return nil
		})
	}
	return route{path: RouteForwards, methods: []method{
		{http.MethodGet, serve(func(w http.ResponseWriter, req *http.Request) *Error {
			if e := noParams(req); e != nil {
				return e
			}
			fs := m.Forwards()
			specs := make([]string, len(fs))
			for i, f := range fs {
				specs[i] = f.String()
			}
			writeJSON(w, http.StatusOK, specs)
			return nil
		})},
		{http.MethodPost, change(func(f portfwd.Forward) error { return m.AddForward(f) }, http.StatusCreated)},
		{http.MethodDelete, change(func(f portfwd.Forward) error { return m.RemoveForward(f) }, http.StatusOK)},
	}}
}

// specOf reads and parses the one spec parameter of a POST or DELETE
// /v1/forwards.
func specOf(req *http.Request) (portfwd.Forward, *Error) {
	q := req.URL.Query()
	var unknown []string
	for k := range q {
		if k != SpecParam {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return portfwd.Forward{}, badRequest("api: %s %s: unknown parameter %q: the only parameter is %s=%s", req.Method, req.URL.Path, unknown[0], SpecParam, portfwd.Syntax)
	}
	specs := q[SpecParam]
	switch len(specs) {
	case 0:
		return portfwd.Forward{}, badRequest("api: %s %s: missing parameter %s: want ?%s=%s", req.Method, req.URL.Path, SpecParam, SpecParam, portfwd.Syntax)
	case 1:
	default:
		return portfwd.Forward{}, badRequest("api: %s %s: %d %s parameters: want one, %s", req.Method, req.URL.Path, len(specs), SpecParam, portfwd.Syntax)
	}
	f, err := portfwd.Parse(specs[0])
	if err != nil {
		return portfwd.Forward{}, badRequest("%v", err)
	}
	return f, nil
}
