package stack

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Keepalive defaults and limits, as package net and Linux have them.
const (
	// DefaultKeepAliveIdle and DefaultKeepAliveInterval are what a zero
	// KeepAliveConfig field means, as in package net.
	DefaultKeepAliveIdle     = 15 * time.Second
	DefaultKeepAliveInterval = 15 * time.Second
	// DefaultKeepAliveCount is the number of unanswered probes after
	// which the peer counts as dead, for a zero KeepAliveConfig.Count.
	DefaultKeepAliveCount = 9

	maxKeepAliveTime  = 32767 * time.Second // Linux's MAX_TCP_KEEPIDLE and MAX_TCP_KEEPINTVL
	maxKeepAliveCount = 127                 // Linux's MAX_TCP_KEEPCNT
)

// optError is the inner error of an option set to a value it cannot
// take; it matches syscall.EINVAL, as the kernel's setsockopt returns.
type optError struct{ msg string }

func (e optError) Error() string        { return e.msg }
func (e optError) Is(target error) bool { return target == syscall.EINVAL }

// SetKeepAlive turns TCP keepalive probes on or off, as
// (*net.TCPConn).SetKeepAlive, keeping the idle time, interval and count
// already set (Linux's defaults until then: 2 h, 75 s, 9). When a peer
// leaves that many probes unanswered, Read and Write fail with an error
// matching syscall.ETIMEDOUT.
func (c *TCPConn) SetKeepAlive(keepalive bool) error {
	return c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: keepalive, Idle: -1, Interval: -1, Count: -1})
}

// SetKeepAlivePeriod sets both the idle time before the first probe and
// the interval between probes to d, as (*net.TCPConn).SetKeepAlivePeriod
// does on Linux. Zero means DefaultKeepAliveIdle; a negative d changes
// nothing. It does not turn keepalive on.
func (c *TCPConn) SetKeepAlivePeriod(d time.Duration) error {
	if d < 0 {
		return nil
	}
	if d == 0 {
		d = DefaultKeepAliveIdle
	}
	if err := checkKeepAliveTime("period", d); err != nil {
		return c.opErr("set", err)
	}
	return c.setKeepAlive(-1, d, d, -1)
}

// SetKeepAliveConfig configures keepalive as (*net.TCPConn).
// SetKeepAliveConfig does: Enable turns probes on or off; a zero Idle,
// Interval or Count means its default (DefaultKeepAliveIdle,
// DefaultKeepAliveInterval, DefaultKeepAliveCount) and a negative one
// leaves the current value. Unlike Linux, which counts whole seconds,
// Idle and Interval keep their sub-second precision. Allowed: Idle and
// Interval up to 32767 s, Count 1-127, as Linux allows; other values
// give an error matching syscall.EINVAL that names the field.
func (c *TCPConn) SetKeepAliveConfig(config net.KeepAliveConfig) error {
	idle, intvl, count := config.Idle, config.Interval, config.Count
	if idle == 0 {
		idle = DefaultKeepAliveIdle
	}
	if intvl == 0 {
		intvl = DefaultKeepAliveInterval
	}
	if count == 0 {
		count = DefaultKeepAliveCount
	}
	if idle > 0 {
		if err := checkKeepAliveTime("Idle", idle); err != nil {
			return c.opErr("set", err)
		}
	}
	if intvl > 0 {
		if err := checkKeepAliveTime("Interval", intvl); err != nil {
			return c.opErr("set", err)
		}
	}
	if count > maxKeepAliveCount {
		return c.opErr("set", optError{fmt.Sprintf("KeepAliveConfig.Count %d: want 1-%d (0 means %d, negative leaves it unchanged)", count, maxKeepAliveCount, DefaultKeepAliveCount)})
	}
	enable := 0
	if config.Enable {
		enable = 1
	}
	return c.setKeepAlive(enable, idle, intvl, count)
}

func checkKeepAliveTime(field string, d time.Duration) error {
	if d > maxKeepAliveTime {
		return optError{fmt.Sprintf("keepalive %s %v: want up to %v (0 means %v, negative leaves it unchanged)", field, d, maxKeepAliveTime, DefaultKeepAliveIdle)}
	}
	return nil
}

// setKeepAlive applies what is not negative: enable (0 or 1), idle,
// interval and count.
func (c *TCPConn) setKeepAlive(enable int, idle, intvl time.Duration, count int) error {
	if c.isClosed() {
		return c.opErr("set", closedErr{})
	}
	if idle > 0 {
		o := tcpip.KeepaliveIdleOption(idle)
		if terr := c.ep.SetSockOpt(&o); terr != nil {
			return c.opErr("set", translate(terr))
		}
	}
	if intvl > 0 {
		o := tcpip.KeepaliveIntervalOption(intvl)
		if terr := c.ep.SetSockOpt(&o); terr != nil {
			return c.opErr("set", translate(terr))
		}
	}
	if count > 0 {
		if terr := c.ep.SetSockOptInt(tcpip.KeepaliveCountOption, count); terr != nil {
			return c.opErr("set", translate(terr))
		}
	}
	if enable >= 0 {
		c.ep.SocketOptions().SetKeepAlive(enable == 1)
	}
	return nil
}

// KeepAliveConfig returns the connection's keepalive settings.
func (c *TCPConn) KeepAliveConfig() net.KeepAliveConfig {
	cfg := net.KeepAliveConfig{Enable: c.ep.SocketOptions().GetKeepAlive()}
	var idle tcpip.KeepaliveIdleOption
	if c.ep.GetSockOpt(&idle) == nil {
		cfg.Idle = time.Duration(idle)
	}
	var intvl tcpip.KeepaliveIntervalOption
	if c.ep.GetSockOpt(&intvl) == nil {
		cfg.Interval = time.Duration(intvl)
	}
	if n, terr := c.ep.GetSockOptInt(tcpip.KeepaliveCountOption); terr == nil {
		cfg.Count = n
	}
	return cfg
}

// NoDelay reports whether Nagle's algorithm is off (the default, as in
// package net).
func (c *TCPConn) NoDelay() bool { return !c.ep.SocketOptions().GetDelayOption() }

// acceptDeadline is a listener's deadline, made on first use so that the
// zero value works.
type acceptDeadline struct {
	once sync.Once
	d    *deadline
}

func (a *acceptDeadline) get() *deadline {
	a.once.Do(func() { a.d = newDeadline() })
	return a.d
}

// SetDeadline sets the deadline of Accept, as (*net.TCPListener).
// SetDeadline: past it, a blocked or later Accept fails with an error
// matching os.ErrDeadlineExceeded (a net.Error whose Timeout is true). The
// zero time means no deadline.
func (l *TCPListener) SetDeadline(t time.Time) error {
	if l.isClosed() {
		return opError("set", l.network, netip.AddrPort{}, l.laddr, closedErr{})
	}
	l.adl.get().set(t)
	return nil
}
