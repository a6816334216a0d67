package stack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"
)

// DefaultHappyEyeballsDelay is Config.HappyEyeballsDelay's default, the
// "Connection Attempt Delay" RFC 8305 recommends.
const DefaultHappyEyeballsDelay = 300 * time.Millisecond

// minAttemptTime is the least time an attempt gets when a deadline is
// shared between several addresses (unless less than that is left).
const minAttemptTime = 2 * time.Second

// dialAddrs connects to one of addrs, which are in the order to try. For
// TCP with addresses of both families it runs Happy Eyeballs (RFC 8305):
// the addresses of the first one's family are tried in turn, and after
// the stack's HappyEyeballsDelay (or as soon as those have all failed)
// the other family's in parallel; the first connection wins and the
// other attempt is abandoned, its port released. Each attempt in turn
// gets its share of what is left of the context's deadline.
func (st *Stack) dialAddrs(ctx context.Context, network string, addrs []netip.AddrPort) (net.Conn, error) {
	var primaries, fallbacks []netip.AddrPort
	for _, a := range addrs {
		if a.Addr().Is4() == addrs[0].Addr().Is4() {
			primaries = append(primaries, a)
		} else {
			fallbacks = append(fallbacks, a)
		}
	}
	if isUDP(network) || len(fallbacks) == 0 || st.heDelay < 0 {
		return st.dialSerial(ctx, network, addrs)
	}
	type result struct {
		c       net.Conn
		err     error
		primary bool
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, 2)
	race := func(primary bool, list []netip.AddrPort) {
		go func() {
			c, err := st.dialSerial(ctx, network, list)
			results <- result{c, err, primary}
		}()
	}
	race(true, primaries)
	delay := st.heDelay
	if delay == 0 {
		delay = DefaultHappyEyeballsDelay
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	running, fallbackStarted := 1, false
	var primaryErr, fallbackErr error
	var winner net.Conn
	for running > 0 {
		select {
		case <-timer.C:
			if !fallbackStarted && winner == nil {
				fallbackStarted = true
				running++
				race(false, fallbacks)
			}
			continue
		case r := <-results:
			running--
			if r.err == nil {
				if winner == nil {
					winner = r.c
					cancel() // the other attempt stops
				} else {
					abortConn(r.c)
				}
				continue
			}
			if r.primary {
				primaryErr = r.err
				if !fallbackStarted && winner == nil && ctx.Err() == nil && !errors.Is(r.err, net.ErrClosed) {
					fallbackStarted = true
					running++
					race(false, fallbacks)
				}
			} else {
				fallbackErr = r.err
			}
		}
	}
	if winner != nil {
		return winner, nil
	}
	if primaryErr != nil {
		return nil, primaryErr
	}
	return nil, fallbackErr
}

// abortConn closes a connection that lost a race, with a reset so that
// its port comes back at once.
func abortConn(c net.Conn) {
	if tc, ok := c.(*TCPConn); ok {
		tc.Abort()
		return
	}
	c.Close()
}

// dialSerial tries addrs in turn until one connects, each attempt with
// its share of the context's deadline.
func (st *Stack) dialSerial(ctx context.Context, network string, addrs []netip.AddrPort) (net.Conn, error) {
	var first error
	for i, a := range addrs {
		actx := ctx
		if dl, ok := ctx.Deadline(); ok {
			part := attemptDeadline(time.Now(), dl, len(addrs)-i)
			var cancel context.CancelFunc
			actx, cancel = context.WithDeadline(ctx, part)
			defer cancel()
		}
		var c net.Conn
		var err error
		if isUDP(network) {
			c, err = st.DialUDPAddrPort(netip.AddrPort{}, a)
		} else {
			c, err = st.DialTCPAddrPort(actx, netip.AddrPort{}, a)
		}
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
			break
		}
	}
	return nil, first
}

// attemptDeadline shares what is left before deadline between the
// remaining attempts, giving each at least minAttemptTime if there is
// that much left.
func attemptDeadline(now, deadline time.Time, remaining int) time.Time {
	left := deadline.Sub(now)
	share := left / time.Duration(remaining)
	if share < minAttemptTime {
		share = min(minAttemptTime, left)
	}
	return now.Add(share)
}
