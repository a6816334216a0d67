//go:build linux

package conformance

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// msg is one line of the control protocol (JSON).
type msg struct {
	Event    string  `json:"event"`
	Scenario string  `json:"scenario,omitempty"`
	Params   *Params `json:"params,omitempty"`
	Port     int     `json:"port,omitempty"`
	UDPPort  int     `json:"udp_port,omitempty"`
	Value    string  `json:"value,omitempty"`
	OK       bool    `json:"ok,omitempty"`
}

// ctl is one end of a control connection.
type ctl struct {
	c   net.Conn
	enc *json.Encoder
	dec *json.Decoder
}

func newCtl(c net.Conn) *ctl {
	return &ctl{c: c, enc: json.NewEncoder(c), dec: json.NewDecoder(bufio.NewReader(c))}
}

func (k *ctl) send(m msg) error {
	k.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := k.enc.Encode(m); err != nil {
		return fmt.Errorf("control: sending %q: %w", m.Event, err)
	}
	return nil
}

// event sends a named event with a value.
func (k *ctl) event(name, value string) error { return k.send(msg{Event: name, Value: value}) }

// errVerdict is returned by expect when the peer ended the scenario
// early with a verdict.
type errVerdict struct{ m msg }

func (e *errVerdict) Error() string { return "the peer gave up: " + e.m.Value }

// expect waits up to d for the event name. A verdict in its place ends
// the wait with an *errVerdict.
func (k *ctl) expect(name string, d time.Duration) (msg, error) {
	k.c.SetReadDeadline(time.Now().Add(d))
	var m msg
	if err := k.dec.Decode(&m); err != nil {
		return m, fmt.Errorf("control: waiting %v for %q: %w", d, name, err)
	}
	if m.Event == name {
		return m, nil
	}
	if m.Event == "verdict" {
		return m, &errVerdict{m}
	}
	return m, fmt.Errorf("control: got %q, want %q", m.Event, name)
}

// Result is the outcome of one scenario.
type Result struct {
	Scenario string
	Pass     bool
	// Figures are what was measured, or why the scenario failed; the
	// guest's part first, then the peer's.
	Figures string
}

// String is the result line the guest program prints:
// "RESULT NAME PASS|FAIL figures".
func (r Result) String() string {
	v := "FAIL"
	if r.Pass {
		v = "PASS"
	}
	return fmt.Sprintf("RESULT %s %s %s", r.Scenario, v, r.Figures)
}

// RunGuest runs the guest's part of the scenario name against the peer
// at addr (HOST:PORT, the peer's control listener as the guest reaches
// it), with the scenario's default parameters or, if long, its real-scale
// ones. It returns when both parts are done, or at the scenario's bound.
func RunGuest(ctx context.Context, addr, name string, long bool) Result {
	s, ok := Lookup(name)
	if !ok {
		return Result{Scenario: name, Figures: fmt.Sprintf("unknown scenario %q (want one of %v)", name, Names())}
	}
	p := s.Params
	if long {
		p = s.Long
	}
	res := Result{Scenario: name}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		res.Figures = fmt.Sprintf("peer address %q: %v", addr, err)
		return res
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		res.Figures = fmt.Sprintf("control connection: %v", err)
		return res
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	k := newCtl(c)
	if err := k.send(msg{Event: "hello", Scenario: name, Params: &p}); err != nil {
		res.Figures = err.Error()
		return res
	}
	ready, err := k.expect("ready", 10*time.Second)
	if err != nil {
		res.Figures = err.Error()
		return res
	}
	g := &guestRun{ctl: k, p: p, host: host, port: ready.Port, udpPort: ready.UDPPort}
	figs, gerr := s.guest(g)
	var v msg
	var verr error
	if ve := (*errVerdict)(nil); errors.As(gerr, &ve) {
		v = ve.m
	} else if g.verdict != nil {
		v = *g.verdict
	} else {
		v, verr = k.expect("verdict", verdictWait(p))
	}
	switch {
	case gerr != nil:
		res.Figures = "guest: " + gerr.Error()
		if verr == nil && v.Value != "" {
			res.Figures += "; peer: " + v.Value
		}
	case verr != nil:
		res.Figures = fmt.Sprintf("guest: %s; peer: %v", figs, verr)
	default:
		res.Pass = v.OK
		res.Figures = join(figs, v.Value)
	}
	return res
}

// verdictWait bounds the wait for the peer's verdict once the guest's
// part is done.
func verdictWait(p Params) time.Duration { return p.Limit + 30*time.Second }

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// guestRun is what a scenario's guest part works with.
type guestRun struct {
	ctl     *ctl
	p       Params
	host    string // the peer's address as the guest reaches it
	port    int    // the peer's data listener
	udpPort int    // the peer's UDP socket, for UDP scenarios
	// verdict is the peer's verdict when the guest's part had to wait
	// for it itself (to stay silent until the peer is done).
	verdict *msg
}

// dataAddr is the peer's data listener as the guest reaches it.
func (g *guestRun) dataAddr() string { return net.JoinHostPort(g.host, strconv.Itoa(g.port)) }

// dial opens a data connection.
func (g *guestRun) dial() (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp", g.dataAddr(), 10*time.Second)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// Config sets up a peer. Its zero value works: data listeners open with
// package net, and nothing watches.
type Config struct {
	// Listen and ListenPacket open the scenarios' data listeners and UDP
	// sockets ("tcp"/"udp", "IP:0"); nil means net.Listen and
	// net.ListenPacket. A peer serving a network namespace other than
	// the caller's opens them there. They must return a
	// *net.TCPListener and a *net.UDPConn.
	Listen       func(network, address string) (net.Listener, error)
	ListenPacket func(network, address string) (net.PacketConn, error)

	// Event is called on the peer's side at the points a scenario marks
	// for outside measurement, before the scenario goes on: "stalled"
	// when every flow of the stalled scenario is stalled.
	Event func(scenario, event string)
	// Result is called with the peer's verdict of each scenario.
	Result func(scenario string, ok bool, figures string)
}

// Server is the host's peer: it serves the scenarios' host parts to
// guests that connect to its control listener.
type Server struct {
	l   net.Listener
	cfg Config

	mu    sync.Mutex // guards conns; a leaf (no other lock is taken under it)
	conns map[net.Conn]bool
	wg    sync.WaitGroup
	once  sync.Once
}

// Serve starts a peer on the control listener l. Data listeners are
// opened on l's IP address. Close stops it.
func Serve(l net.Listener, cfg Config) *Server {
	if cfg.Listen == nil {
		cfg.Listen = net.Listen
	}
	if cfg.ListenPacket == nil {
		cfg.ListenPacket = net.ListenPacket
	}
	s := &Server{l: l, cfg: cfg, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
		}
	}()
	return s
}

// Close closes the control listener and every control connection (which
// ends their scenarios), and waits for the scenarios' host parts. It is
// safe to call more than once.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		err = s.l.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	s.wg.Wait()
	return err
}

// serve runs one scenario's host part for the control connection c.
func (s *Server) serve(c net.Conn) {
	k := newCtl(c)
	hello, err := k.expect("hello", 30*time.Second)
	if err != nil {
		return
	}
	sc, ok := Lookup(hello.Scenario)
	if !ok || hello.Params == nil {
		k.send(msg{Event: "verdict", Value: fmt.Sprintf("unknown scenario %q (want one of %v)", hello.Scenario, Names())})
		return
	}
	ip := s.l.Addr().(*net.TCPAddr).IP
	h := &hostRun{ctl: k, p: *hello.Params, name: sc.Name, cfg: s.cfg}
	defer h.closeAll()
	verdict := func(ok bool, v string) {
		if s.cfg.Result != nil {
			s.cfg.Result(sc.Name, ok, v)
		}
		k.send(msg{Event: "verdict", OK: ok, Value: v})
	}
	ln, err := s.cfg.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		verdict(false, "data listener: "+err.Error())
		return
	}
	dl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		verdict(false, fmt.Sprintf("data listener: a %T, want a *net.TCPListener", ln))
		return
	}
	h.l = dl
	h.track(dl)
	ready := msg{Event: "ready", Port: dl.Addr().(*net.TCPAddr).Port}
	if sc.udp {
		pc, err := s.cfg.ListenPacket("udp", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			verdict(false, "UDP socket: "+err.Error())
			return
		}
		u, ok := pc.(*net.UDPConn)
		if !ok {
			pc.Close()
			verdict(false, fmt.Sprintf("UDP socket: a %T, want a *net.UDPConn", pc))
			return
		}
		h.udp = u
		h.track(u)
		ready.UDPPort = u.LocalAddr().(*net.UDPAddr).Port
	}
	if err := k.send(ready); err != nil {
		return
	}
	figs, err := sc.host(h)
	if err != nil {
		verdict(false, err.Error())
		return
	}
	verdict(true, figs)
}

// hostRun is what a scenario's host part works with.
type hostRun struct {
	ctl  *ctl
	p    Params
	name string
	cfg  Config
	l    *net.TCPListener
	udp  *net.UDPConn

	mu      sync.Mutex // guards closers; a leaf
	closers []interface{ Close() error }
}

// track closes x when the scenario ends.
func (h *hostRun) track(x interface{ Close() error }) {
	h.mu.Lock()
	h.closers = append(h.closers, x)
	h.mu.Unlock()
}

func (h *hostRun) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, x := range h.closers {
		x.Close()
	}
}

// accept takes the next data connection, waiting at most d.
func (h *hostRun) accept(d time.Duration) (*net.TCPConn, error) {
	h.l.SetDeadline(time.Now().Add(d))
	c, err := h.l.AcceptTCP()
	if err != nil {
		return nil, fmt.Errorf("accept: %w", err)
	}
	h.track(c)
	return c, nil
}

// mark calls the Event hook.
func (h *hostRun) mark(event string) {
	if h.cfg.Event != nil {
		h.cfg.Event(h.name, event)
	}
}
