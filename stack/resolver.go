package stack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// maxDNSCache bounds the resolver's cache (entries of one name and record
// type each).
const maxDNSCache = 4096

// resolver holds the name-resolution settings and cache of a Stack.
type resolver struct {
	search []string // search domains, each with a trailing dot
	ndots  int
	now    func() time.Time // the cache's clock; time.Now outside tests

	mu    sync.Mutex // guards cache; a leaf: nothing else is locked while it is held
	cache map[cacheKey]cacheEntry
}

type cacheKey struct {
	name string // lower case, with a trailing dot
	typ  dnsmessage.Type
}

type cacheEntry struct {
	addrs    []netip.Addr
	notFound bool // the name does not exist (NXDOMAIN)
	expires  time.Time
}

// NdotsZero is Config.DNSNdots for resolv.conf's ndots:0, which the
// field's zero value, the default of 1, cannot say.
const NdotsZero = -1

func newResolver(cfg Config) *resolver {
	r := &resolver{ndots: cfg.DNSNdots, now: time.Now, cache: make(map[cacheKey]cacheEntry)}
	switch r.ndots {
	case 0:
		r.ndots = 1
	case NdotsZero:
		r.ndots = 0
	}
	for _, d := range cfg.DNSSearch {
		d = strings.ToLower(d)
		if !strings.HasSuffix(d, ".") {
			d += "."
		}
		r.search = append(r.search, d)
	}
	return r
}

// checkSearchDomain reports what is wrong with a search domain, if
// anything: it must be a host name (labels of letters, digits and
// hyphens, not starting or ending with a hyphen, 1-63 bytes each), at
// most 253 bytes, optionally with a trailing dot.
func checkSearchDomain(d string) error {
	name := strings.TrimSuffix(d, ".")
	if name == "" {
		return errors.New("empty; want a domain name such as corp.example")
	}
	if len(name) > 253 {
		return fmt.Errorf("%d bytes long; want at most 253", len(name))
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" {
			return errors.New("has an empty label (two dots in a row, or a leading dot)")
		}
		if len(label) > 63 {
			return fmt.Errorf("label %q is %d bytes long; want at most 63", label, len(label))
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", label)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("label %q has the character %q; want letters, digits and hyphens", label, c)
			}
		}
	}
	return nil
}

// nameList returns the fully qualified names to try for host, in order,
// as resolv.conf's search and ndots options have them: a name with at
// least ndots dots is tried as it is first, then with each search domain;
// one with fewer dots with the search domains first. A name with a
// trailing dot is tried only as it is.
func (r *resolver) nameList(host string) []string {
	host = strings.ToLower(host)
	if strings.HasSuffix(host, ".") {
		return []string{host}
	}
	asIs := host + "."
	if len(r.search) == 0 {
		return []string{asIs}
	}
	out := make([]string, 0, len(r.search)+1)
	if strings.Count(host, ".") >= r.ndots {
		out = append(out, asIs)
	}
	for _, d := range r.search {
		if len(host)+1+len(d) <= 254 {
			out = append(out, host+"."+d)
		}
	}
	if strings.Count(host, ".") < r.ndots {
		out = append(out, asIs)
	}
	return out
}

// cached returns the cached answer for key, if it has not expired, with
// its remaining time.
func (r *resolver) cached(key cacheKey) (cacheEntry, time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[key]
	if !ok {
		return cacheEntry{}, 0, false
	}
	left := e.expires.Sub(r.now())
	if left <= 0 {
		delete(r.cache, key)
		return cacheEntry{}, 0, false
	}
	return e, left, true
}

func (r *resolver) store(key cacheKey, e cacheEntry, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if len(r.cache) >= maxDNSCache {
		for k, old := range r.cache {
			if !old.expires.After(now) {
				delete(r.cache, k)
			}
		}
		for k := range r.cache {
			if len(r.cache) < maxDNSCache {
				break
			}
			delete(r.cache, k) // an arbitrary victim
		}
	}
	e.expires = now.Add(ttl)
	r.cache[key] = e
}

// lookupType resolves one fully qualified name for one record type, from
// the cache or through the stack. It returns the addresses, the time they
// may still be cached, and a not-found *net.DNSError for a name that does
// not exist.
func (st *Stack) lookupType(ctx context.Context, fqdn string, t dnsmessage.Type) ([]netip.Addr, time.Duration, error) {
	key := cacheKey{fqdn, t}
	if e, left, ok := st.rs.cached(key); ok {
		if e.notFound {
			return nil, left, &net.DNSError{Err: "no such host", Name: fqdn, IsNotFound: true}
		}
		return e.addrs, left, nil
	}
	name, err := dnsmessage.NewName(fqdn)
	if err != nil {
		return nil, 0, &net.DNSError{Err: "invalid host name", Name: fqdn, IsNotFound: true}
	}
	res, err := st.query(ctx, name, t)
	var de *net.DNSError
	switch {
	case err == nil:
		st.rs.store(key, cacheEntry{addrs: res.addrs}, res.ttl)
	case errors.As(err, &de) && de.IsNotFound:
		st.rs.store(key, cacheEntry{notFound: true}, res.ttl)
	}
	return res.addrs, res.ttl, err
}

// lookupName resolves a fully qualified name to the addresses of the
// families the stack has, asking for A and AAAA at once.
func (st *Stack) lookupName(ctx context.Context, fqdn string) ([]netip.Addr, error) {
	var types []dnsmessage.Type
	if st.has4.Load() {
		types = append(types, dnsmessage.TypeA)
	}
	if st.has6.Load() {
		types = append(types, dnsmessage.TypeAAAA)
	}
	type result struct {
		addrs []netip.Addr
		err   error
	}
	results := make([]result, len(types))
	var wg sync.WaitGroup
	for i, t := range types {
		// Answers in the cache need no goroutine.
		if e, _, ok := st.rs.cached(cacheKey{fqdn, t}); ok {
			results[i].addrs = e.addrs
			if e.notFound {
				results[i].err = &net.DNSError{Err: "no such host", Name: fqdn, IsNotFound: true}
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, _, err := st.lookupType(ctx, fqdn, t)
			results[i] = result{a, err}
		}()
	}
	wg.Wait()
	var addrs []netip.Addr
	var firstErr error
	for _, r := range results {
		addrs = append(addrs, r.addrs...)
		if r.err != nil && firstErr == nil {
			firstErr = r.err
		}
	}
	if len(addrs) > 0 {
		return addrs, nil
	}
	if firstErr == nil {
		firstErr = &net.DNSError{Err: "no such host", IsNotFound: true}
	}
	return nil, firstErr
}

// lookup resolves host as package net does: a literal address as it is;
// a name through the stack's DNS servers, trying the search domains as
// Config.DNSNdots says, answers cached for their TTL (negative ones
// briefly), the addresses ordered by RFC 6724 destination address
// selection with the stack's own routes and addresses.
func (st *Stack) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	dnsErr := func(msg string, notFound, timeout bool) error {
		return &net.DNSError{Err: msg, Name: host, IsNotFound: notFound, IsTimeout: timeout}
	}
	if len(st.dns) == 0 {
		return nil, dnsErr(errNoDNS.Error(), false, false)
	}
	if len(host) == 0 || len(host) > 254 || strings.HasPrefix(host, ".") || strings.Contains(host, "..") {
		return nil, dnsErr("invalid host name", true, false)
	}
	if _, err := dnsmessage.NewName(strings.TrimSuffix(host, ".") + "."); err != nil {
		return nil, dnsErr("invalid host name", true, false)
	}
	var firstErr error
	for _, fqdn := range st.rs.nameList(host) {
		addrs, err := st.lookupName(ctx, fqdn)
		if err == nil {
			return st.sortRFC6724(addrs), nil
		}
		var de *net.DNSError
		if !(errors.As(err, &de) && de.IsNotFound) && firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if firstErr == nil {
		return nil, dnsErr("no such host", true, false)
	}
	var de *net.DNSError
	if errors.As(firstErr, &de) {
		de.Name = host
		return nil, de
	}
	return nil, dnsErr(firstErr.Error(), false, errors.Is(firstErr, timeoutErr) || errors.Is(firstErr, context.DeadlineExceeded))
}

// Resolver returns a *net.Resolver whose queries travel through the stack
// to its DNS servers (Config.DNS), with its search domains, ndots and
// cache. Package net runs the lookups (LookupHost, LookupIP, LookupMX,
// LookupTXT, LookupSRV, LookupAddr...) and sends its queries to a server
// inside the stack: that server answers A and AAAA queries from the
// stack's cache or resolution, applying Config.DNSSearch as Config.
// DNSNdots says, and forwards any other query to Config.DNS through the
// stack as it is.
//
// Package net also applies the search domains of the host's
// /etc/resolv.conf, and orders addresses by RFC 6724 with the host's
// routes: names those domains produce are looked up too (each answer is
// cached, negative ones briefly). LookupNetIP and DialContext on the
// Stack itself apply only the stack's settings and routes.
//
// Without Config.DNS every lookup fails with a *net.DNSError saying so.
func (st *Stack) Resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo:     true,
		StrictErrors: true,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			// Counted with the handlers, which Close waits for.
			if !st.handlerStart() {
				return nil, &net.OpError{Op: "dial", Net: network, Err: closedErr{}}
			}
			client, server := net.Pipe()
			go func() {
				defer st.handlers.Done()
				st.serveResolver(server)
			}()
			return client, nil
		},
	}
}

// serveResolver answers DNS messages framed as over TCP (package net
// talks to a net.Conn that is not a net.PacketConn that way) until the
// client closes its end, or the stack closes.
func (st *Stack) serveResolver(c net.Conn) {
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pc := pipeCloser{c}
	if st.track(pc) != nil {
		return
	}
	defer st.untrack(pc)
	var lenBuf [2]byte
	for {
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		resp := st.answer(ctx, q)
		if resp == nil {
			return
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...)); err != nil {
			return
		}
	}
}

// answer builds the response to the DNS query q, or nil if q is not one.
func (st *Stack) answer(ctx context.Context, q []byte) []byte {
	var m dnsmessage.Message
	if err := m.Unpack(q); err != nil || m.Header.Response || len(m.Questions) != 1 {
		return nil
	}
	qq := m.Questions[0]
	reply := func(rcode dnsmessage.RCode, answers []dnsmessage.Resource) []byte {
		r := dnsmessage.Message{
			Header:    dnsmessage.Header{ID: m.Header.ID, Response: true, RecursionDesired: m.Header.RecursionDesired, RecursionAvailable: true, RCode: rcode},
			Questions: m.Questions,
			Answers:   answers,
		}
		out, err := r.Pack()
		if err != nil {
			return nil
		}
		return out
	}
	if len(st.dns) == 0 {
		return reply(dnsmessage.RCodeRefused, nil)
	}
	if qq.Class != dnsmessage.ClassINET || (qq.Type != dnsmessage.TypeA && qq.Type != dnsmessage.TypeAAAA) {
		// Anything else goes to the servers as it is.
		for _, srv := range st.dns {
			if srv.Port() == 0 {
				srv = netip.AddrPortFrom(srv.Addr(), 53)
			}
			resp, err := st.roundTrip(ctx, srv, q, false)
			if err == nil && len(resp) > 2 && resp[2]&0x02 != 0 { // TC: again over TCP
				resp, err = st.roundTrip(ctx, srv, q, true)
			}
			if err == nil {
				return resp
			}
		}
		return reply(dnsmessage.RCodeServerFailure, nil)
	}
	host := strings.TrimSuffix(qq.Name.String(), ".")
	var firstErr error
	noData := false
	for _, fqdn := range st.rs.nameList(host) {
		addrs, left, err := st.lookupType(ctx, fqdn, qq.Type)
		if err == nil && len(addrs) > 0 {
			var answers []dnsmessage.Resource
			ttl := uint32(max(left/time.Second, 0))
			for _, a := range addrs {
				h := dnsmessage.ResourceHeader{Name: qq.Name, Type: qq.Type, Class: dnsmessage.ClassINET, TTL: ttl}
				if qq.Type == dnsmessage.TypeA {
					answers = append(answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: a.As4()}})
				} else {
					answers = append(answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
				}
			}
			return reply(dnsmessage.RCodeSuccess, answers)
		}
		var de *net.DNSError
		switch {
		case err == nil:
			noData = true // the name exists, without records of the type
		case !(errors.As(err, &de) && de.IsNotFound) && firstErr == nil:
			firstErr = err
		}
	}
	switch {
	case noData:
		return reply(dnsmessage.RCodeSuccess, nil)
	case firstErr != nil:
		return reply(dnsmessage.RCodeServerFailure, nil)
	}
	return reply(dnsmessage.RCodeNameError, nil)
}

// pipeCloser closes a Resolver server's end of its pipe when the stack
// closes.
type pipeCloser struct{ c net.Conn }

func (p pipeCloser) closeFromStack() { p.c.Close() }
