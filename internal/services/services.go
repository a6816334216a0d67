// Package services holds the small built-in servers `ustack run` offers
// on its stack: echo and discard (RFC 862 and 863, TCP and UDP) and an
// HTTP page with the allocator's state.
package services

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ustacknet/ustack/portalloc"
)

// Group runs servers and stops them together.
type Group struct {
	log *slog.Logger
	wg  sync.WaitGroup

	mu      sync.Mutex // guards the fields below; a leaf
	closers []io.Closer
	conns   map[net.Conn]struct{}
	closed  bool
}

// NewGroup returns an empty group that logs to log.
func NewGroup(log *slog.Logger) *Group {
	return &Group{log: log, conns: make(map[net.Conn]struct{})}
}

func (g *Group) add(c io.Closer) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		c.Close()
		return false
	}
	g.closers = append(g.closers, c)
	return true
}

func (g *Group) trackConn(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		c.Close()
		return false
	}
	g.conns[c] = struct{}{}
	return true
}

func (g *Group) untrackConn(c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.conns, c)
}

// Close stops every server, closes their connections and waits for their
// goroutines. It is idempotent.
func (g *Group) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		g.wg.Wait()
		return nil
	}
	g.closed = true
	cs := g.closers
	for c := range g.conns {
		cs = append(cs, c)
	}
	g.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	g.wg.Wait()
	return nil
}

// serveStream accepts on l and runs handle for each connection.
func (g *Group) serveStream(name string, l net.Listener, handle func(net.Conn)) {
	if !g.add(l) {
		return
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					g.log.Warn("accept failed", "service", name, "err", err)
				}
				return
			}
			if !g.trackConn(c) {
				return
			}
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				defer g.untrackConn(c)
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// Echo serves the TCP echo protocol on l: every byte comes back.
func (g *Group) Echo(l net.Listener) {
	g.serveStream("echo", l, func(c net.Conn) { io.Copy(c, c) })
}

// Discard serves the TCP discard protocol on l.
func (g *Group) Discard(l net.Listener) {
	g.serveStream("discard", l, func(c net.Conn) { io.Copy(io.Discard, c) })
}

// EchoPacket serves UDP echo on pc.
func (g *Group) EchoPacket(pc net.PacketConn) { g.servePacket(pc, true) }

// DiscardPacket serves UDP discard on pc.
func (g *Group) DiscardPacket(pc net.PacketConn) { g.servePacket(pc, false) }

func (g *Group) servePacket(pc net.PacketConn, echo bool) {
	if !g.add(pc) {
		return
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if echo {
				pc.WriteTo(buf[:n], from)
			}
		}
	}()
}

// PortsFunc reports the allocator's state.
type PortsFunc func() []portalloc.Snapshot

// HTTP serves on l a page with the allocator's state ("/", HTML) and the
// same as JSON ("/ports.json").
func (g *Group) HTTP(l net.Listener, ports PortsFunc) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := pageTmpl.Execute(w, pageData{Now: time.Now().UTC().Format(time.RFC3339), Pools: ports()}); err != nil {
			g.log.Warn("status page", "err", err)
		}
	})
	mux.HandleFunc("GET /ports.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(ports())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	g.add(closerFunc(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			return srv.Close()
		}
		return nil
	}))
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Warn("http service stopped", "err", err)
		}
	}()
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

type pageData struct {
	Now   string
	Pools []portalloc.Snapshot
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"ports": func(ps []uint16) string {
		if len(ps) > 64 {
			return fmt.Sprintf("%v … (%d in all)", ps[:64], len(ps))
		}
		return fmt.Sprint(ps)
	},
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>ustack ports</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.3em .6em;text-align:right}th{background:#eee}</style>
</head><body>
<h1>ustack port allocator</h1>
<p>as of {{.Now}}</p>
<table>
<tr><th>protocol</th><th>range</th><th>policy</th><th>cursor</th><th>in use</th><th>free</th><th>allocations</th><th>releases</th><th>exhausted</th><th>wraps</th><th>vetoes</th></tr>
{{range .Pools}}<tr><td>{{.Protocol}}</td><td>{{.Range}}</td><td>{{.Policy}}</td><td>{{.Cursor}}</td><td>{{.InUse}}</td><td>{{.Free}}</td><td>{{.Stats.Allocations}}</td><td>{{.Stats.Releases}}</td><td>{{.Stats.Exhausted}}</td><td>{{.Stats.Wraps}}</td><td>{{.Stats.Vetoes}}</td></tr>
{{end}}</table>
{{range .Pools}}{{if .Ports}}<p>{{.Protocol}} ports in use: {{ports .Ports}}</p>{{end}}{{end}}
</body></html>
`))
