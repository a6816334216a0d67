package stack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsTimeout bounds one query to one server.
const dnsTimeout = 2 * time.Second

// LookupHost resolves host through the stack's DNS servers (Config.DNS)
// and returns its IPv4 and IPv6 addresses as strings, like
// net.LookupHost. A literal address is returned as it is. Errors are
// *net.DNSError.
func (st *Stack) LookupHost(ctx context.Context, host string) ([]string, error) {
	addrs, err := st.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out, nil
}

// LookupNetIP is LookupHost returning netip.Addr values.
func (st *Stack) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	return st.lookup(ctx, host)
}

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
	fqdn := host
	if !strings.HasSuffix(fqdn, ".") {
		fqdn += "."
	}
	name, err := dnsmessage.NewName(fqdn)
	if err != nil || len(host) == 0 || len(host) > 253 {
		return nil, dnsErr("invalid host name", true, false)
	}
	var types []dnsmessage.Type
	if st.has4 {
		types = append(types, dnsmessage.TypeA)
	}
	if st.has6 {
		types = append(types, dnsmessage.TypeAAAA)
	}
	type result struct {
		addrs []netip.Addr
		err   error
	}
	results := make(chan result, len(types))
	for _, t := range types {
		go func() {
			a, err := st.query(ctx, name, t)
			results <- result{a, err}
		}()
	}
	var addrs []netip.Addr
	var firstErr error
	for range types {
		r := <-results
		addrs = append(addrs, r.addrs...)
		if r.err != nil && firstErr == nil {
			firstErr = r.err
		}
	}
	if len(addrs) > 0 {
		return addrs, nil
	}
	var de *net.DNSError
	if errors.As(firstErr, &de) {
		de.Name = host
		return nil, de
	}
	if firstErr != nil {
		return nil, dnsErr(firstErr.Error(), false, errors.Is(firstErr, timeoutErr))
	}
	return nil, dnsErr("no such host", true, false)
}

// query asks each server in turn for one record type, over UDP, retrying
// over TCP when the answer is truncated.
func (st *Stack) query(ctx context.Context, name dnsmessage.Name, t dnsmessage.Type) ([]netip.Addr, error) {
	var lastErr error
	for _, srv := range st.dns {
		if srv.Port() == 0 {
			srv = netip.AddrPortFrom(srv.Addr(), 53)
		}
		for attempt := 0; attempt < 2; attempt++ {
			addrs, truncated, err := st.exchange(ctx, srv, name, t, false)
			if err == nil && truncated {
				addrs, _, err = st.exchange(ctx, srv, name, t, true)
			}
			if err == nil {
				return addrs, nil
			}
			lastErr = err
			var de *net.DNSError
			if errors.As(err, &de) && de.IsNotFound {
				return nil, err // an authoritative answer: no need to ask again
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
	}
	return nil, lastErr
}

func (st *Stack) exchange(ctx context.Context, srv netip.AddrPort, name dnsmessage.Name, t dnsmessage.Type, useTCP bool) ([]netip.Addr, bool, error) {
	id := uint16(rand.Uint32())
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: name, Type: t, Class: dnsmessage.ClassINET}},
	}
	q, err := msg.Pack()
	if err != nil {
		return nil, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var c net.Conn
	if useTCP {
		c, err = st.DialTCPAddrPort(ctx, netip.AddrPort{}, srv)
	} else {
		c, err = st.DialUDPAddrPort(netip.AddrPort{}, srv)
	}
	if err != nil {
		return nil, false, err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 65535)
	var resp []byte
	if useTCP {
		framed := binary.BigEndian.AppendUint16(nil, uint16(len(q)))
		if _, err := c.Write(append(framed, q...)); err != nil {
			return nil, false, err
		}
		if _, err := io.ReadFull(c, buf[:2]); err != nil {
			return nil, false, err
		}
		n := int(binary.BigEndian.Uint16(buf[:2]))
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return nil, false, err
		}
		resp = buf[:n]
	} else {
		if _, err := c.Write(q); err != nil {
			return nil, false, err
		}
		for {
			n, err := c.Read(buf)
			if err != nil {
				return nil, false, err
			}
			var h dnsmessage.Header
			var p dnsmessage.Parser
			if h, err = p.Start(buf[:n]); err != nil || h.ID != id || !h.Response {
				continue // not our answer; keep waiting until the deadline
			}
			resp = buf[:n]
			break
		}
	}
	return parseAnswer(resp, id, name, t)
}

func parseAnswer(resp []byte, id uint16, name dnsmessage.Name, t dnsmessage.Type) ([]netip.Addr, bool, error) {
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return nil, false, fmt.Errorf("malformed DNS answer: %w", err)
	}
	if h.ID != id {
		return nil, false, errors.New("DNS answer with a wrong ID")
	}
	if h.Truncated {
		return nil, true, nil
	}
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return nil, false, &net.DNSError{Err: "no such host", IsNotFound: true}
	default:
		return nil, false, &net.DNSError{Err: "server answered " + h.RCode.String(), IsTemporary: h.RCode == dnsmessage.RCodeServerFailure}
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, false, fmt.Errorf("malformed DNS answer: %w", err)
	}
	var out []netip.Addr
	for {
		ah, err := p.AnswerHeader()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil {
			return nil, false, fmt.Errorf("malformed DNS answer: %w", err)
		}
		switch {
		case ah.Type == dnsmessage.TypeA && t == dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return nil, false, fmt.Errorf("malformed DNS answer: %w", err)
			}
			out = append(out, netip.AddrFrom4(r.A))
		case ah.Type == dnsmessage.TypeAAAA && t == dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return nil, false, fmt.Errorf("malformed DNS answer: %w", err)
			}
			out = append(out, netip.AddrFrom16(r.AAAA))
		default:
			if err := p.SkipAnswer(); err != nil {
				return nil, false, fmt.Errorf("malformed DNS answer: %w", err)
			}
		}
	}
	_ = name
	return out, false, nil
}
