// Package slirpapi serves slirp4netns's control protocol (its
// --api-socket) over any portfwd.Manager, so that tools written for
// slirp4netns (rootlesskit's and podman's port forwarding) can drive
// ustack's sandbox.
package slirpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/ustacknet/ustack/portfwd"
)

// Server serves slirp4netns's control protocol over a portfwd.Manager
// (a sandbox gateway). Each connection carries one JSON request and gets
// one JSON reply:
//
//	{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8080, "guest_port": 80}}
//	→ {"return": {"id": 1}}
//	{"execute": "list_hostfwd"}
//	→ {"return": {"entries": [{"id": 1, "proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}]}}
//	{"execute": "remove_hostfwd", "arguments": {"id": 1}}
//	→ {"return": {}}
//
// Errors are {"error": {"desc": "..."}}. proto is tcp, udp, tcp4, udp4,
// tcp6 or udp6; host_addr defaults to 0.0.0.0 (:: for tcp6 and udp6), as
// in slirp4netns; guest_addr, if given, must be the guest's address.
//
// Forwards are added, removed and listed through the gateway's
// portfwd.Manager methods, as the control API (package api) does: the ids
// are this protocol's own, and list_hostfwd leaves out a forward that was
// removed another way.
type Server struct {
	fw    portfwd.Manager                      // the gateway's forwards
	guest func(portfwd.Forward) netip.AddrPort // the guest's end of a forward

	// mu guards the fields below, and is held over the Manager calls of
	// add_hostfwd and list_hostfwd. LOCK ORDERING: mu > the Manager's.
	mu      sync.Mutex
	nextID  int
	entries map[int]portfwd.Forward
}

// New returns the protocol over fw; guest gives a forward's end in the
// guest (its address, which a request's guest_addr must name, and port).
func New(fw portfwd.Manager, guest func(portfwd.Forward) netip.AddrPort) *Server {
	return &Server{fw: fw, guest: guest, nextID: 1, entries: make(map[int]portfwd.Forward)}
}

// slirpTimeout bounds one request's exchange, and maxSlirpRequest its
// size.
const (
	slirpTimeout    = 10 * time.Second
	maxSlirpRequest = 64 << 10
)

// Serve answers connections on l until l is closed; it returns l's
// Accept error then. Each connection is answered on its own goroutine,
// which ends with the exchange (bounded by a deadline).
func (a *Server) Serve(l net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.handle(c)
		}()
	}
}

type slirpRequest struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
}

type slirpFwd struct {
	ID        int    `json:"id"`
	Proto     string `json:"proto"`
	HostAddr  string `json:"host_addr"`
	HostPort  int    `json:"host_port"`
	GuestAddr string `json:"guest_addr"`
	GuestPort int    `json:"guest_port"`
}

func (a *Server) handle(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(slirpTimeout))
	var req slirpRequest
	var reply any
	// As slirp4netns, which takes requests under 4 KiB, a bounded read.
	if err := json.NewDecoder(io.LimitReader(c, maxSlirpRequest)).Decode(&req); err != nil {
		reply = slirpError("bad request: cannot parse JSON: %v", err)
	} else {
		reply = a.Do(req.Execute, req.Arguments)
	}
	b, _ := json.Marshal(reply)
	c.Write(append(b, '\n'))
}

func slirpError(format string, args ...any) map[string]any {
	return map[string]any{"error": map[string]string{"desc": fmt.Sprintf(format, args...)}}
}

func slirpReturn(v any) map[string]any { return map[string]any{"return": v} }

// Do runs one request and returns its reply object.
func (a *Server) Do(execute string, args json.RawMessage) any {
	switch execute {
	case "add_hostfwd":
		var f slirpFwd
		if len(args) == 0 {
			return slirpError("bad request: add_hostfwd: no arguments (want proto, host_port, guest_port; host_addr and guest_addr optional)")
		}
		if err := json.Unmarshal(args, &f); err != nil {
			return slirpError("bad request: add_hostfwd: bad arguments: %v", err)
		}
		fwd, err := a.forwardOf(f)
		if err != nil {
			return slirpError("bad request: add_hostfwd: %v", err)
		}
		// Under a.mu, so that a list_hostfwd cannot see the forward
		// active and its entry missing.
		a.mu.Lock()
		defer a.mu.Unlock()
		if err := a.fw.AddForward(fwd); err != nil {
			return slirpError("add_hostfwd: %v", err)
		}
		id := a.nextID
		a.nextID++
		a.entries[id] = fwd
		return slirpReturn(map[string]int{"id": id})
	case "list_hostfwd":
		a.mu.Lock()
		defer a.mu.Unlock()
		active := make(map[portfwd.Forward]bool)
		for _, f := range a.fw.Forwards() {
			active[f] = true
		}
		ids := make([]int, 0, len(a.entries))
		for id, f := range a.entries {
			if !active[f] {
				delete(a.entries, id) // removed another way
				continue
			}
			ids = append(ids, id)
		}
		sort.Ints(ids)
		entries := make([]slirpFwd, 0, len(ids))
		for _, id := range ids {
			f := a.entries[id]
			entries = append(entries, slirpFwd{ID: id, Proto: f.Proto, HostAddr: f.Host.Addr().String(), HostPort: int(f.Host.Port()),
				GuestAddr: a.guest(f).Addr().String(), GuestPort: int(f.GuestPort)})
		}
		return slirpReturn(map[string]any{"entries": entries})
	case "remove_hostfwd":
		var f struct {
			ID *int `json:"id"`
		}
		if len(args) == 0 {
			return slirpError("bad request: remove_hostfwd: no arguments (want id)")
		}
		if err := json.Unmarshal(args, &f); err != nil {
			return slirpError("bad request: remove_hostfwd: bad arguments: %v", err)
		}
		if f.ID == nil {
			return slirpError("bad request: remove_hostfwd: bad arguments.id: missing")
		}
		a.mu.Lock()
		fwd, ok := a.entries[*f.ID]
		delete(a.entries, *f.ID)
		a.mu.Unlock()
		if !ok {
			return slirpError("bad request: remove_hostfwd: id %d not found", *f.ID)
		}
		if err := a.fw.RemoveForward(fwd); err != nil && !errors.Is(err, portfwd.ErrNotFound) {
			return slirpError("remove_hostfwd: %v", err)
		}
		return slirpReturn(map[string]any{})
	case "":
		return slirpError("bad request: no \"execute\"")
	default:
		return slirpError("bad request: unknown execute %q (want add_hostfwd, list_hostfwd or remove_hostfwd)", execute)
	}
}

// forwardOf checks a slirp4netns add_hostfwd request and turns it into a
// Forward.
func (a *Server) forwardOf(f slirpFwd) (portfwd.Forward, error) {
	var proto string
	six := false
	switch f.Proto {
	case "tcp", "tcp4":
		proto = "tcp"
	case "udp", "udp4":
		proto = "udp"
	case "tcp6":
		proto, six = "tcp", true
	case "udp6":
		proto, six = "udp", true
	default:
		return portfwd.Forward{}, fmt.Errorf("bad arguments.proto %q: want tcp, udp, tcp4, udp4, tcp6 or udp6", f.Proto)
	}
	if f.HostPort < 1 || f.HostPort > 65535 {
		return portfwd.Forward{}, fmt.Errorf("bad arguments.host_port %d: want 1-65535", f.HostPort)
	}
	if f.GuestPort < 1 || f.GuestPort > 65535 {
		return portfwd.Forward{}, fmt.Errorf("bad arguments.guest_port %d: want 1-65535", f.GuestPort)
	}
	host := netip.IPv4Unspecified()
	if six {
		host = netip.IPv6Unspecified()
	}
	if f.HostAddr != "" {
		h, err := netip.ParseAddr(f.HostAddr)
		if err != nil || h.Zone() != "" {
			return portfwd.Forward{}, fmt.Errorf("bad arguments.host_addr %q: want an IP address", f.HostAddr)
		}
		if h.Is6() != six && !h.Is4In6() {
			return portfwd.Forward{}, fmt.Errorf("bad arguments.host_addr %q: not an address of proto %s", f.HostAddr, f.Proto)
		}
		host = h
	}
	fwd := portfwd.Forward{Proto: proto, Host: netip.AddrPortFrom(host, uint16(f.HostPort)), GuestPort: uint16(f.GuestPort)}
	if f.GuestAddr != "" {
		g, err := netip.ParseAddr(f.GuestAddr)
		if err != nil || g != a.guest(fwd).Addr() {
			return portfwd.Forward{}, fmt.Errorf("bad arguments.guest_addr %q: want the guest's address %s", f.GuestAddr, a.guest(fwd).Addr())
		}
	}
	return fwd, nil
}
