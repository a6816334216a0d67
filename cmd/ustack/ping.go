package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/cobra"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// The peer's IPv6 address in ping's network; IPv4 is demoServer's.
var (
	pingPeer6  = netip.MustParsePrefix("fd00:18::1/64")
	pingLocal6 = netip.MustParsePrefix("fd00:18::2/64")
)

type pingFlags struct {
	useTUN   bool
	count    int
	interval time.Duration
	size     int
	wait     time.Duration
	ids      portalloc.Range
}

func newPingCmd() *cobra.Command {
	f := pingFlags{count: 4, interval: time.Second, size: 56, wait: 2 * time.Second, ids: portalloc.IANA}
	c := &cobra.Command{
		Use:   "ping [flags] HOST",
		Short: "Send ICMP echo requests from a user-space stack, printing like ping(8)",
		Long: `ping runs a user-space stack with the address 198.18.0.2/24 and fd00:18::2/64
and sends ICMP echo requests from it to HOST, one at a time, printing each
reply as ping(8) does, with the echo identifier the stack's ICMP pool gave
the socket.

Without --tun the peer is a second user-space stack over an in-memory link.
With --tun (root only) the peer is the Linux kernel: the stack runs over a
real TUN device whose other side is in a private network namespace, where
the kernel has 198.18.0.1/24 and fd00:18::1/64. Other addresses of those
subnets go unanswered; nothing leaves the namespace.

The exit status is 0 if a reply arrived, 1 if none did, 2 on bad usage.`,
		Example: `  ustack ping 198.18.0.1
  sudo ustack ping --tun -c 3 fd00:18::1`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("%s takes one HOST (such as 198.18.0.1 or fd00:18::1), got %d arguments", c.CommandPath(), len(args))}
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			host, err := f.check(args[0])
			if err != nil {
				return usageError{err}
			}
			cfg := stack.Config{Ports: portalloc.Config{ICMP: portalloc.PoolConfig{Range: f.ids}}}
			var env *pingEnv
			if f.useTUN {
				env, err = newTUNPingEnv(cfg)
			} else {
				env, err = newMemPingEnv(cfg)
			}
			if err != nil {
				return err
			}
			defer env.close()
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt)
			defer stop()
			fmt.Fprintf(c.OutOrStdout(), "# peer: %s\n", env.kind)
			received, err := runPing(ctx, c.OutOrStdout(), env.st, host, f)
			if err != nil {
				return err
			}
			if received == 0 {
				return exitStatus(1)
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.BoolVar(&f.useTUN, "tun", false, "ping the Linux kernel over a real TUN device in a private network namespace (needs root)")
	fl.IntVarP(&f.count, "count", "c", f.count, "stop after this many echo requests (1-1000000)")
	fl.DurationVarP(&f.interval, "interval", "i", f.interval, "wait between echo requests (0 to 1h)")
	fl.IntVarP(&f.size, "size", "s", f.size, "data bytes in each echo request (0-65000)")
	fl.DurationVarP(&f.wait, "timeout", "W", f.wait, "how long to wait for each reply (1ms to 1h)")
	fl.Var(&f.ids, "id-range", "echo identifier range FIRST-LAST or preset ("+joinPresets()+")")
	return c
}

// check validates the flags and HOST.
func (f *pingFlags) check(arg string) (netip.Addr, error) {
	host, err := netip.ParseAddr(arg)
	if err != nil {
		return host, fmt.Errorf("invalid HOST %q: want a literal IPv4 or IPv6 address, such as 198.18.0.1 or fd00:18::1 (the peer has no name service)", arg)
	}
	host = host.Unmap()
	if host.IsMulticast() || host.IsUnspecified() || host == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return host, fmt.Errorf("invalid HOST %s: ping to a multicast, broadcast or unspecified address is not supported; want a unicast address", host)
	}
	switch {
	case f.count < 1 || f.count > 1000000:
		return host, fmt.Errorf("invalid argument %d for \"--count\" flag: want 1-1000000", f.count)
	case f.interval < 0 || f.interval > time.Hour:
		return host, fmt.Errorf("invalid argument %v for \"--interval\" flag: want 0 to 1h", f.interval)
	case f.size < 0 || f.size > 65000:
		return host, fmt.Errorf("invalid argument %d for \"--size\" flag: want 0-65000", f.size)
	case f.wait < time.Millisecond || f.wait > time.Hour:
		return host, fmt.Errorf("invalid argument %v for \"--timeout\" flag: want 1ms to 1h", f.wait)
	}
	return host, nil
}

// runPing pings host count times and prints as ping(8). It returns the
// number of replies.
func runPing(ctx context.Context, w io.Writer, st *stack.Stack, host netip.Addr, f pingFlags) (int, error) {
	c, err := st.DialPingAddr(netip.Addr{}, host)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	var typ icmp.Type = ipv4.ICMPTypeEcho
	proto, hdr := 1, 20
	if host.Is6() {
		typ, proto, hdr = ipv6.ICMPTypeEchoRequest, 58, 40
	}
	fmt.Fprintf(w, "PING %s (%s) %d(%d) bytes of data, echo identifier %d.\n", host, host, f.size, f.size+8+hdr, c.ID())
	data := make([]byte, f.size)
	for i := range data {
		data[i] = byte(i)
	}
	buf := make([]byte, f.size+8+64)
	var (
		sent, received int
		rtts           []time.Duration
		start          = time.Now()
	)
	for seq := 1; seq <= f.count && ctx.Err() == nil; seq++ {
		if seq > 1 && f.interval > 0 {
			t := time.NewTimer(f.interval)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			if ctx.Err() != nil {
				break
			}
		}
		msg, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{Seq: seq, Data: data}}).Marshal(nil)
		if err != nil {
			return received, err
		}
		t0 := time.Now()
		c.SetDeadline(t0.Add(f.wait))
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
		if _, err := c.Write(msg); err != nil {
			stop()
			return received, err
		}
		sent++
		for {
			n, err := c.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					if ctx.Err() == nil {
						fmt.Fprintf(w, "no reply for icmp_seq=%d within %v\n", seq, f.wait)
					}
					break
				}
				stop()
				return received, err
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil {
				continue
			}
			e, ok := m.Body.(*icmp.Echo)
			if !ok || e.Seq != seq {
				continue // a late reply to an earlier request
			}
			rtt := time.Since(t0)
			rtts = append(rtts, rtt)
			received++
			fmt.Fprintf(w, "%d bytes from %s: icmp_seq=%d ident=%d time=%.3f ms\n", n, host, e.Seq, e.ID, ms(rtt))
			break
		}
		stop()
	}
	fmt.Fprintf(w, "\n--- %s ping statistics ---\n", host)
	loss := 0.0
	if sent > 0 {
		loss = 100 * float64(sent-received) / float64(sent)
	}
	fmt.Fprintf(w, "%d packets transmitted, %d received, %.0f%% packet loss, time %dms\n", sent, received, loss, time.Since(start).Milliseconds())
	if len(rtts) > 0 {
		lo, hi, sum, sq := rtts[0], rtts[0], 0.0, 0.0
		for _, r := range rtts {
			lo, hi = min(lo, r), max(hi, r)
			sum += ms(r)
			sq += ms(r) * ms(r)
		}
		avg := sum / float64(len(rtts))
		mdev := math.Sqrt(max(sq/float64(len(rtts))-avg*avg, 0))
		fmt.Fprintf(w, "rtt min/avg/max/mdev = %.3f/%.3f/%.3f/%.3f ms\n", ms(lo), avg, ms(hi), mdev)
	}
	return received, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pingEnv is the pinging stack and what its peer needs.
type pingEnv struct {
	kind  string
	st    *stack.Stack
	close func()
}

// newMemPingEnv joins the stack to a second user-space stack, which
// answers echo requests, over an in-memory link.
func newMemPingEnv(cfg stack.Config) (*pingEnv, error) {
	p, err := tun.NewPipe(0)
	if err != nil {
		return nil, err
	}
	peer, err := stack.New(stack.Config{Link: p.B(), Addrs: []netip.Prefix{demoServer, pingPeer6}})
	if err != nil {
		p.Close()
		return nil, err
	}
	cfg.Link = p.A()
	cfg.Addrs = []netip.Prefix{demoClient, pingLocal6}
	st, err := stack.New(cfg)
	if err != nil {
		peer.Close()
		p.Close()
		return nil, err
	}
	return &pingEnv{kind: "a second user-space stack over an in-memory link", st: st,
		close: func() { st.Close(); peer.Close(); p.Close() }}, nil
}
