package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/ustacknet/ustack/api"
	"github.com/ustacknet/ustack/internal/services"
	"github.com/ustacknet/ustack/metrics"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
)

type runFlags struct {
	tunName   string
	addrs     []string
	peerAddrs []string
	mtu       int
	tcpRange  portalloc.Range
	udpRange  portalloc.Range
	sctpRange portalloc.Range
	icmpRange portalloc.Range
	policy    portalloc.Policy
	echo      int
	discard   int
	http      int
	apiPath   string
	metrics   string
	pcap      string
	snapLen   int
	level     logLevel
	driver    string
	queues    int
	offload   string
}

func newRunCmd() *cobra.Command {
	f := runFlags{tcpRange: portalloc.IANA, udpRange: portalloc.IANA, sctpRange: portalloc.IANA, icmpRange: portalloc.IANA}
	c := &cobra.Command{
		Use:   "run --tun NAME --addr PREFIX [flags]",
		Short: "Run a stack over a TUN device until SIGINT or SIGTERM",
		Long: `run creates the TUN device NAME, gives the stack the address --addr and the
kernel side of the device --peer-addr (if given), and serves the built-in
services asked for until SIGINT or SIGTERM. On shutdown it closes every
connection, releases every port and removes the device and the API socket.

--driver chooses how the device is made: kernel (Linux's default: this
project's own /dev/net/tun code, with the kernel's offloads and multiple
queues), water (github.com/songgao/water: one queue, no offloads; the
only driver on macOS and Windows) or freebsd (this project's own tun(4)
code: one queue, no offloads; the only driver on FreeBSD).`,
		Example: `  ustack run --tun ustack0 --addr 198.18.0.2/24 --peer-addr 198.18.0.1/24 --echo 7 --http 80 --api /run/ustack.sock`,
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, tcfg, err := f.configs()
			if err != nil {
				return usageError{err}
			}
			if f.pcap != "" {
				pf, err := openPcap(f.pcap)
				if err != nil {
					return usageError{err}
				}
				// Closed after the stack, which stops capturing on Close.
				defer pf.Close()
				cfg.Capture = pf
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runStack(ctx, c, f, cfg, tcfg)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.tunName, "tun", "", "name of the TUN device to create (required)")
	fl.StringArrayVar(&f.addrs, "addr", nil, "the stack's address with prefix length, e.g. 198.18.0.2/24 (repeatable, IPv4 and IPv6)")
	fl.StringArrayVar(&f.peerAddrs, "peer-addr", nil, "the kernel's address on the device, e.g. 198.18.0.1/24 (repeatable)")
	fl.IntVar(&f.mtu, "mtu", 1500, "MTU of the device and the stack (68-65535)")
	fl.StringVar(&f.driver, "driver", "", "TUN driver: "+driverChoices()+" (default "+string(tun.Drivers()[0])+")")
	fl.IntVar(&f.queues, "queues", 1, "TUN queues, each with its own reader (kernel driver only; more than 1 makes a multi-queue device)")
	fl.StringVar(&f.offload, "offload", "auto", "kernel offloads (IFF_VNET_HDR): auto (on if the kernel agrees), on (fail without them) or off; the water driver has none")
	fl.Var(&f.tcpRange, "tcp-range", "TCP ephemeral range FIRST-LAST or preset ("+joinPresets()+")")
	fl.Var(&f.udpRange, "udp-range", "UDP ephemeral range FIRST-LAST or preset")
	fl.Var(&f.sctpRange, "sctp-range", "SCTP ephemeral range FIRST-LAST or preset")
	fl.Var(&f.icmpRange, "icmp-range", "ICMP echo identifier range FIRST-LAST or preset")
	fl.Var(&f.policy, "policy", "port policy: sequential, random or hash")
	fl.IntVar(&f.echo, "echo", 0, "serve TCP and UDP echo on this port")
	fl.IntVar(&f.discard, "discard", 0, "serve TCP and UDP discard on this port")
	fl.IntVar(&f.http, "http", 0, "serve a page with the allocator's state on this TCP port")
	fl.StringVar(&f.apiPath, "api", "", "serve the control API on this unix socket (mode 0600; on Windows a token file for a localhost TCP port); it also serves /metrics")
	fl.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics over HTTP at IP:PORT/metrics, e.g. 127.0.0.1:9109")
	fl.StringVar(&f.pcap, "pcap", "", "write every packet the stack sends and receives to this file, in pcap format (tcpdump -r FILE reads it)")
	fl.IntVar(&f.snapLen, "pcap-snaplen", 0, "bytes kept of each captured packet (0 = 262144, the most)")
	f.level.Level = 0
	fl.Var(&f.level, "log-level", "log level: debug, info, warn or error")
	return c
}

func parsePrefixes(flag string, vals []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range vals {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("invalid argument %q for \"--%s\" flag: want an address with prefix length, such as 198.18.0.2/24 or fd00::2/64", v, flag)
		}
		out = append(out, p)
	}
	return out, nil
}

func checkPort(flag string, v int) error {
	if v < 0 || v > 65535 {
		return fmt.Errorf("invalid argument %d for \"--%s\" flag: want a port 1-65535 (0 = off)", v, flag)
	}
	return nil
}

func (f *runFlags) configs() (stack.Config, tun.Config, error) {
	var cfg stack.Config
	var tcfg tun.Config
	if f.tunName == "" {
		return cfg, tcfg, errors.New("--tun NAME is required")
	}
	if len(f.addrs) == 0 {
		return cfg, tcfg, errors.New("--addr is required: the stack's address, such as 198.18.0.2/24")
	}
	if err := checkMetricsAddr(f.metrics); err != nil {
		return cfg, tcfg, err
	}
	addrs, err := parsePrefixes("addr", f.addrs)
	if err != nil {
		return cfg, tcfg, err
	}
	peers, err := parsePrefixes("peer-addr", f.peerAddrs)
	if err != nil {
		return cfg, tcfg, err
	}
	if f.mtu < 68 || f.mtu > 65535 {
		return cfg, tcfg, fmt.Errorf("invalid argument %d for \"--mtu\" flag: want 68-65535", f.mtu)
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"echo", f.echo}, {"discard", f.discard}, {"http", f.http}} {
		if err := checkPort(p.name, p.v); err != nil {
			return cfg, tcfg, err
		}
	}
	if f.echo != 0 && f.echo == f.discard || f.http != 0 && (f.http == f.echo || f.http == f.discard) {
		return cfg, tcfg, errors.New("--echo, --discard and --http need different ports")
	}
	cfg = stack.Config{
		Addrs: addrs,
		MTU:   uint32(f.mtu),
		Ports: portalloc.Config{
			TCP:  portalloc.PoolConfig{Range: f.tcpRange, Policy: f.policy},
			UDP:  portalloc.PoolConfig{Range: f.udpRange, Policy: f.policy},
			SCTP: portalloc.PoolConfig{Range: f.sctpRange, Policy: f.policy},
			ICMP: portalloc.PoolConfig{Range: f.icmpRange, Policy: f.policy},
		},
		Logger:         f.level.logger(),
		CaptureSnapLen: f.snapLen,
	}
	if f.snapLen < 0 || f.snapLen > stack.DefaultCaptureSnapLen {
		return cfg, tcfg, fmt.Errorf("invalid argument %d for \"--pcap-snaplen\" flag: want 0 (262144) or 1-262144", f.snapLen)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, tcfg, err
	}
	tcfg = tun.Config{Name: f.tunName, MTU: f.mtu, Addrs: peers, Up: true}
	if err := f.deviceFlags(&tcfg); err != nil {
		return cfg, tcfg, err
	}
	if err := tcfg.Validate(); err != nil {
		return cfg, tcfg, fmt.Errorf("invalid --tun, --mtu or --peer-addr: %v", err)
	}
	return cfg, tcfg, nil
}

// deviceFlags applies --driver, --queues and --offload to tcfg.
func (f *runFlags) deviceFlags(tcfg *tun.Config) error {
	if f.driver != "" {
		d, err := tun.ParseDriver(f.driver)
		if err != nil {
			return fmt.Errorf("invalid argument %q for \"--driver\" flag: want %s", f.driver, driverChoices())
		}
		tcfg.Driver = d
	}
	// Every driver but the kernel's has one queue and no offloads.
	drv := tcfg.Driver
	if drv == tun.DriverDefault {
		drv = tun.Drivers()[0]
	}
	simple := drv != tun.DriverKernel
	if f.queues < 1 || f.queues > tun.MaxQueues {
		return fmt.Errorf("invalid argument %d for \"--queues\" flag: want 1-%d", f.queues, tun.MaxQueues)
	}
	if f.queues > 1 {
		if simple {
			return fmt.Errorf("--queues %d is not supported with the %s driver, which opens one queue: use --driver %s (Linux) for several", f.queues, drv, tun.DriverKernel)
		}
		tcfg.MultiQueue, tcfg.Queues = true, f.queues
	}
	switch f.offload {
	case "auto":
	case "on":
		if simple {
			return fmt.Errorf("--offload on is not supported with the %s driver, which cannot set IFF_VNET_HDR: use --driver %s (Linux) for the offloads", drv, tun.DriverKernel)
		}
		tcfg.RequireOffload = true
	case "off":
		tcfg.NoOffload = true
	default:
		return fmt.Errorf("invalid argument %q for \"--offload\" flag: want auto, on or off", f.offload)
	}
	return nil
}

// driverChoices lists the --driver values this system has.
func driverChoices() string {
	var s []string
	for _, d := range tun.Drivers() {
		s = append(s, string(d))
	}
	return strings.Join(s, " or ")
}

func runStack(ctx context.Context, c *cobra.Command, f runFlags, cfg stack.Config, tcfg tun.Config) error {
	log := cfg.Logger
	dev, err := tun.Open(tcfg)
	if err != nil {
		return err
	}
	defer dev.Close()
	cfg.Link = dev.LinkEndpoint()
	st, err := stack.New(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	g := services.NewGroup(log)
	defer g.Close()
	listen := func(port int) (net.Listener, net.PacketConn, error) {
		addr := net.JoinHostPort("", strconv.Itoa(port))
		l, err := st.Listen("tcp", addr)
		if err != nil {
			return nil, nil, err
		}
		pc, err := st.ListenPacket("udp", addr)
		if err != nil {
			l.Close()
			return nil, nil, err
		}
		return l, pc, nil
	}
	if f.echo != 0 {
		l, pc, err := listen(f.echo)
		if err != nil {
			return fmt.Errorf("--echo %d: %w", f.echo, err)
		}
		g.Echo(l)
		g.EchoPacket(pc)
	}
	if f.discard != 0 {
		l, pc, err := listen(f.discard)
		if err != nil {
			return fmt.Errorf("--discard %d: %w", f.discard, err)
		}
		g.Discard(l)
		g.DiscardPacket(pc)
	}
	if f.http != 0 {
		l, err := st.Listen("tcp", net.JoinHostPort("", strconv.Itoa(f.http)))
		if err != nil {
			return fmt.Errorf("--http %d: %w", f.http, err)
		}
		g.HTTP(l, st.Ports)
	}
	reg := metrics.NewRegistry(metrics.Sources{Ports: st.Ports, Stack: st.GVisor(), Device: func() metrics.DeviceStats { return metrics.DeviceStats(dev.Stats()) }})
	if f.apiPath != "" {
		srv, err := api.Listen(f.apiPath, api.Config{Ports: st, Metrics: reg})
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	if f.metrics != "" {
		m, err := serveMetrics(f.metrics, reg, c.OutOrStdout(), log)
		if err != nil {
			return err
		}
		defer m.Close()
	}
	log.Info("ustack running", "tun", dev.Name(), "driver", tcfg.Driver, "offload", dev.Offload(), "addrs", cfg.Addrs, "mtu", f.mtu, "api", f.apiPath)
	fmt.Fprintf(c.OutOrStdout(), "ustack: serving on %s (%v); stop with SIGINT or SIGTERM\n", dev.Name(), cfg.Addrs)
	select {
	case <-ctx.Done():
	case <-dev.Gone():
		return fmt.Errorf("%s was deleted (ip link del); stopping", dev.Name())
	}
	log.Info("ustack shutting down")
	if s := st.CaptureStats(); s.Err != nil {
		return fmt.Errorf("--pcap %s: the capture stopped after %d packets: %v", f.pcap, s.Packets, s.Err)
	}
	return nil
}

// openPcap creates (or truncates) the --pcap file, mode 0600: a capture
// holds the traffic's contents.
func openPcap(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("invalid argument %q for \"--pcap\" flag: %v; want a path where a file can be written", path, err)
	}
	return f, nil
}
