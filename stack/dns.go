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

// query asks each server in turn for one record type, over UDP, retrying
// over TCP when the answer is truncated. A name that does not exist gives
// a not-found *net.DNSError; its result still carries the time to cache
// that answer.
func (st *Stack) query(ctx context.Context, name dnsmessage.Name, t dnsmessage.Type) (dnsResult, error) {
	var lastErr error
	for _, srv := range st.dns {
		if srv.Port() == 0 {
			srv = netip.AddrPortFrom(srv.Addr(), 53)
		}
		for attempt := 0; attempt < 2; attempt++ {
			res, truncated, err := st.exchange(ctx, srv, name, t, false)
			if err == nil && truncated {
				res, _, err = st.exchange(ctx, srv, name, t, true)
			}
			if err == nil {
				return res, nil
			}
			lastErr = err
			var de *net.DNSError
			if errors.As(err, &de) && de.IsNotFound {
				return res, err // an authoritative answer: no need to ask again
			}
			if ctx.Err() != nil {
				return dnsResult{}, ctx.Err()
			}
		}
	}
	return dnsResult{}, lastErr
}

func (st *Stack) exchange(ctx context.Context, srv netip.AddrPort, name dnsmessage.Name, t dnsmessage.Type, useTCP bool) (dnsResult, bool, error) {
	id := uint16(rand.Uint32())
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: name, Type: t, Class: dnsmessage.ClassINET}},
	}
	q, err := msg.Pack()
	if err != nil {
		return dnsResult{}, false, err
	}
	resp, err := st.roundTrip(ctx, srv, q, useTCP)
	if err != nil {
		return dnsResult{}, false, err
	}
	return parseAnswer(resp, id, t)
}

// roundTrip sends the DNS message q to srv through the stack and returns
// the answer with the same ID, over UDP or TCP, within dnsTimeout.
func (st *Stack) roundTrip(ctx context.Context, srv netip.AddrPort, q []byte, useTCP bool) ([]byte, error) {
	if len(q) < 12 {
		return nil, errors.New("DNS message too short")
	}
	id := binary.BigEndian.Uint16(q)
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var c net.Conn
	var err error
	if useTCP {
		c, err = st.DialTCPAddrPort(ctx, netip.AddrPort{}, srv)
	} else {
		c, err = st.DialUDPAddrPort(netip.AddrPort{}, srv)
	}
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 65535)
	if useTCP {
		framed := binary.BigEndian.AppendUint16(nil, uint16(len(q)))
		if _, err := c.Write(append(framed, q...)); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, buf[:2]); err != nil {
			return nil, err
		}
		n := int(binary.BigEndian.Uint16(buf[:2]))
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		var h dnsmessage.Header
		var p dnsmessage.Parser
		if h, err = p.Start(buf[:n]); err != nil || h.ID != id || !h.Response {
			continue // not our answer; keep waiting until the deadline
		}
		return buf[:n], nil
	}
}

// dnsResult is what an answer says about one name and record type.
type dnsResult struct {
	addrs []netip.Addr
	// ttl is how long the answer may be cached: the smallest TTL of its
	// records, or for a negative answer (no such name, or no record of
	// the type) the negative TTL of RFC 2308 from the SOA record.
	ttl time.Duration
}

// Caching bounds: negative answers are kept briefly whatever the zone
// says, positive ones no longer than an hour.
const (
	maxPositiveTTL    = time.Hour
	maxNegativeTTL    = 30 * time.Second
	defaultNegTTL     = 5 * time.Second // a negative answer without an SOA record
	maxSOAMinimumUsed = maxNegativeTTL
)

func parseAnswer(resp []byte, id uint16, t dnsmessage.Type) (dnsResult, bool, error) {
	var p dnsmessage.Parser
	malformed := func(err error) (dnsResult, bool, error) {
		return dnsResult{}, false, fmt.Errorf("malformed DNS answer: %w", err)
	}
	h, err := p.Start(resp)
	if err != nil {
		return malformed(err)
	}
	if h.ID != id {
		return dnsResult{}, false, errors.New("DNS answer with a wrong ID")
	}
	if h.Truncated {
		return dnsResult{}, true, nil
	}
	var notFound bool
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		notFound = true
	default:
		return dnsResult{}, false, &net.DNSError{Err: "server answered " + h.RCode.String(), IsTemporary: h.RCode == dnsmessage.RCodeServerFailure}
	}
	if err := p.SkipAllQuestions(); err != nil {
		return malformed(err)
	}
	var out []netip.Addr
	ttl := maxPositiveTTL
	for {
		ah, err := p.AnswerHeader()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil {
			return malformed(err)
		}
		switch {
		case ah.Type == dnsmessage.TypeA && t == dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return malformed(err)
			}
			out = append(out, netip.AddrFrom4(r.A))
		case ah.Type == dnsmessage.TypeAAAA && t == dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return malformed(err)
			}
			out = append(out, netip.AddrFrom16(r.AAAA))
		default:
			if err := p.SkipAnswer(); err != nil {
				return malformed(err)
			}
		}
		ttl = min(ttl, time.Duration(ah.TTL)*time.Second)
	}
	if len(out) > 0 && !notFound {
		return dnsResult{addrs: out, ttl: ttl}, false, nil
	}
	// A negative answer: cache it for the SOA's negative TTL (RFC 2308:
	// the smaller of its TTL and its MINIMUM), briefly in any case.
	neg := defaultNegTTL
	for {
		ah, err := p.AuthorityHeader()
		if err != nil {
			break
		}
		if ah.Type != dnsmessage.TypeSOA {
			if p.SkipAuthority() != nil {
				break
			}
			continue
		}
		soa, err := p.SOAResource()
		if err != nil {
			break
		}
		neg = min(time.Duration(ah.TTL)*time.Second, time.Duration(soa.MinTTL)*time.Second, maxSOAMinimumUsed)
		break
	}
	if notFound {
		return dnsResult{ttl: neg}, false, &net.DNSError{Err: "no such host", IsNotFound: true}
	}
	return dnsResult{ttl: neg}, false, nil
}
