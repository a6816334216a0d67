package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/ustacknet/ustack/api"
	"github.com/ustacknet/ustack/metrics"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/sandbox"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
)

// sandboxInit runs the child side of a sandbox if this process is one. It
// is called before cobra parses anything.
func sandboxInit() {
	if !sandbox.IsInit() {
		return
	}
	args := os.Args[1:]
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(sandbox.Init(args))
}

type sandboxFlags struct {
	cidr, cidr6   string
	mtu           int
	txQueueLen    int
	ipv6, noIPv6  bool
	tcpRange      portalloc.Range
	udpRange      portalloc.Range
	policy        portalloc.Policy
	publish       []string
	allowLoopback bool
	allow, deny   []string
	dnsUpstream   string
	udpTimeout    time.Duration
	maxFlows      int
	idleTimeout   time.Duration
	relayBuffer   int
	apiPath       string
	level         logLevel
	procs         int
	metrics       string
	netns, userns string
	outbound      []string
	seccomp       bool
	ifName        string
	readyFD       int
	exitFD        int
	pcap          string
	snapLen       int
}

func newSandboxCmd() *cobra.Command {
	f := sandboxFlags{tcpRange: portalloc.IANA, udpRange: portalloc.IANA}
	c := &cobra.Command{
		Use:   "sandbox [flags] (-- CMD [ARGS...] | --netns PID|PATH|NAME)",
		Short: "Run a command in its own network namespace, networked by the user-space stack",
		Long: `sandbox runs CMD in a new network namespace (and a new user namespace when
not run as root) whose only network is a TUN device served by ustack, as
slirp4netns and pasta do. ustack carries the command's TCP and UDP over host
sockets, answers DNS at 10.0.2.3, and forwards host ports into the sandbox.

Defaults follow slirp4netns: the guest is 10.0.2.100/24, the gateway 10.0.2.2,
DNS 10.0.2.3, MTU 65520, and IPv6 fd00::100/64 (gateway fd00::2, DNS fd00::3).
Unlike slirp4netns, the host's loopback is closed unless --allow-host-loopback
is given; then the gateway address reaches the host's 127.0.0.1 (and ::1).

The exit code is CMD's (128+N if a signal N killed it). SIGINT and SIGTERM
are passed to CMD.

With --netns instead of a command, ustack serves an existing network
namespace, as slirp4netns and pasta do for rootless container engines: that
of a process (a PID, and ustack exits when the process does), one at a
path (a bind mount), or one named by ip netns (NAME: /run/netns/NAME). It
creates --if-name there with the guest's addresses and default routes, and
deletes it on exit (SIGINT, SIGTERM, --exit-fd, or the process's end). As a
normal user it joins the user namespace that owns the network namespace (or
--userns) through nsenter(1) to create the device.`,
		Example: `  ustack sandbox -- curl http://example.com/
  ustack sandbox -p 8080:80 --tcp-range 45000-45004 -- python3 -m http.server 80
  ustack sandbox --allow-host-loopback --deny 10.0.0.0/8 -- sh
  unshare --user --map-root-user --net sleep infinity & ustack sandbox --netns $!`,
		Args: func(c *cobra.Command, args []string) error {
			if f.netns != "" {
				if len(args) != 0 {
					return usageError{errors.New("--netns serves an existing namespace: give no command with it")}
				}
				return nil
			}
			if c.ArgsLenAtDash() != 0 || len(args) == 0 {
				return usageError{errors.New("give the command after --, as in: ustack sandbox [flags] -- CMD [ARGS...], or a namespace to serve with --netns PID|PATH")}
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			o, err := f.options(args)
			if err != nil {
				return flagError("sandbox", usageError{err})
			}
			if f.pcap != "" {
				pf, err := openPcapLater(f.pcap)
				if err != nil {
					return usageError{err}
				}
				// Closed once the gateway is gone.
				defer pf.Close()
				o.Gateway.Capture = pf
				o.Gateway.CaptureSnapLen = f.snapLen
			}
			target, err := f.target()
			if err != nil {
				return usageError{err}
			}
			ctx, ctl, stop, err := startControl(c.Context(), f.readyFD, f.exitFD, "seccomp", f.seccomp)
			if err != nil {
				return usageError{err}
			}
			defer stop()
			// An explicit GOMAXPROCS in the environment wins over the
			// flag's default, not over the flag itself.
			if f.procs > 0 && (c.Flags().Changed("procs") || os.Getenv("GOMAXPROCS") == "") {
				runtime.GOMAXPROCS(f.procs)
			}
			var (
				srv *api.Server
				ms  *metricsServer
			)
			o.Ready = ctl.readyHook(func(gw *sandbox.Gateway, dev *tun.Device) error {
				reg := metrics.NewRegistry(metrics.Sources{Ports: gw.Ports, Stack: gw.Stack().GVisor(), Device: func() metrics.DeviceStats { return metrics.DeviceStats(dev.Stats()) }, Gateway: func() metrics.GatewayStats { return metrics.GatewayStats(gw.Stats()) }})
				if f.metrics != "" {
					ms, err = serveMetrics(f.metrics, reg, c.OutOrStdout(), o.Gateway.Logger)
					if err != nil {
						return err
					}
				}
				if f.apiPath == "" {
					return nil
				}
				srv, err = api.Listen(f.apiPath, api.Config{
					Ports:    gw,
					Forwards: gw,
					Stats:    func() api.GatewayStats { return api.GatewayStats(gw.Stats()) },
					Metrics:  reg,
				})
				return err
			})
			defer func() {
				if srv != nil {
					srv.Close()
				}
				ms.Close()
			}()
			var code int
			if target != nil {
				code, err = sandbox.Attach(ctx, o, *target)
			} else {
				code, err = sandbox.Run(ctx, o)
			}
			if srv != nil {
				srv.Close()
			}
			if err != nil {
				if code != 0 {
					fmt.Fprintln(c.ErrOrStderr(), "ustack:", err)
					return exitStatus(code)
				}
				return flagError("sandbox", err)
			}
			if code != 0 {
				return exitStatus(code)
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.cidr, "cidr", sandbox.DefaultCIDR.String(), "the sandbox's IPv4 network (/8 to /25): guest .100, gateway .2, DNS .3")
	fl.StringVar(&f.cidr6, "cidr6", sandbox.DefaultCIDR6.String(), "the sandbox's IPv6 network (/64 to /120)")
	fl.IntVar(&f.mtu, "mtu", sandbox.DefaultMTU, "MTU of the sandbox's interface (1280-65520)")
	fl.IntVar(&f.txQueueLen, "tx-queue-len", sandbox.DefaultTxQueueLen, fmt.Sprintf("transmit queue of the sandbox's interface, in packets (1-%d): what the sandbox sends waits there for ustack, and a burst longer than it is dropped", tun.MaxTxQueueLen))
	fl.BoolVar(&f.ipv6, "ipv6", true, "give the sandbox IPv6")
	fl.BoolVar(&f.noIPv6, "no-ipv6", false, "no IPv6 in the sandbox")
	fl.Var(&f.tcpRange, "tcp-range", "source ports for TCP connections ustack opens into the sandbox: FIRST-LAST or preset")
	fl.Var(&f.udpRange, "udp-range", "source ports for UDP flows ustack opens into the sandbox")
	fl.Var(&f.policy, "policy", "port policy: sequential, random or hash")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "forward a host port into the sandbox: [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp] (repeatable; HOSTADDR defaults to 127.0.0.1)")
	fl.BoolVar(&f.allowLoopback, "allow-host-loopback", false, "let the gateway address reach the host's loopback")
	fl.StringArrayVar(&f.allow, "allow", nil, "only let the sandbox reach this prefix (repeatable)")
	fl.StringArrayVar(&f.deny, "deny", nil, "never let the sandbox reach this prefix (repeatable; wins over --allow)")
	fl.StringArrayVar(&f.outbound, "outbound-addr", nil, "source address of the host sockets that carry the sandbox's flows: an IPv4 or IPv6 address of this host, at most one of each (repeatable)")
	fl.StringVar(&f.dnsUpstream, "dns-upstream", "", "where DNS queries to 10.0.2.3 go, ADDR:PORT (default: nameservers of /etc/resolv.conf)")
	fl.DurationVar(&f.udpTimeout, "udp-timeout", sandbox.DefaultUDPTimeout, "close a UDP flow idle this long")
	fl.IntVar(&f.maxFlows, "max-flows", sandbox.DefaultMaxFlows, "most flows open at once; more are refused")
	fl.DurationVar(&f.idleTimeout, "tcp-idle-timeout", 0, "reset a guest TCP connection idle this long, both ways (0: never)")
	fl.IntVar(&f.relayBuffer, "tcp-buffer", sandbox.DefaultRelayBuffer, "bytes the TCP relay may hold in user space for all connections together")
	fl.StringVar(&f.apiPath, "api", "", "serve the control API (ports, forwards, stats, /metrics) on this unix socket")
	fl.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics over HTTP at IP:PORT/metrics on the host, e.g. 127.0.0.1:9109")
	fl.StringVar(&f.pcap, "pcap", "", "write every packet on the sandbox's interface, both ways, to this file in pcap format (tcpdump -r FILE reads it)")
	fl.IntVar(&f.snapLen, "pcap-snaplen", 0, "bytes kept of each captured packet (0 = 262144, the most)")
	fl.Var(&f.level, "log-level", "log level: debug, info, warn or error")
	fl.BoolVar(&f.seccomp, "seccomp", false, "once the network is up, deny system calls the gateway never needs: running programs, namespaces, mounts, tracing, kernel modules (EPERM)")
	fl.StringVar(&f.netns, "netns", "", "serve this existing network namespace instead of running a command: a PID, a path, or a name from ip netns (/run/netns/NAME)")
	fl.StringVar(&f.userns, "userns", "", "with --netns as a normal user: the user namespace to join to create the device (default: the one owning the network namespace)")
	fl.StringVar(&f.ifName, "if-name", sandbox.DefaultIfName, "name of the sandbox's interface")
	fl.IntVar(&f.readyFD, "ready-fd", -1, "write \"1\" to this descriptor once the network is up, and close it")
	fl.IntVar(&f.exitFD, "exit-fd", -1, "stop when this descriptor is readable or closed (with a command: SIGTERM to it)")
	fl.IntVar(&f.procs, "procs", 1, "CPUs the gateway runs Go code on at once (GOMAXPROCS); 0: one per CPU, Go's default. One, as slirp4netns and pasta, gives the lowest latency (see docs/BENCHMARKS.md); more helps several bulk uploads at once")
	return c
}

// maxProcs bounds --procs (Go's own limit is far higher; no machine this
// runs on needs more).
const maxProcs = 1024

// target returns the namespace --netns names, or nil for a command.
func (f *sandboxFlags) target() (*sandbox.Target, error) {
	if f.netns == "" {
		if f.userns != "" {
			return nil, errors.New("--userns goes with --netns")
		}
		return nil, nil
	}
	t := &sandbox.Target{UserNS: f.userns}
	if pid, err := strconv.ParseInt(f.netns, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if err != nil || pid < 1 || pid > maxPID {
			return nil, fmt.Errorf("invalid argument %q for \"--netns\" flag: want a PID from 1 to %d or a path", f.netns, maxPID)
		}
		t.PID = int(pid)
	} else if !strings.Contains(f.netns, "/") {
		// A name, as ip netns makes them.
		t.NetNS = "/run/netns/" + f.netns
	} else {
		t.NetNS = f.netns
	}
	return t, nil
}

// maxPID is Linux's PID_MAX_LIMIT, the most kernel.pid_max allows.
const maxPID = 1 << 22

func parsePrefixList(flag string, vals []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range vals {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, fmt.Errorf("invalid argument %q for \"--%s\" flag: want a CIDR prefix such as 10.0.0.0/8 or an address", v, flag)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (f *sandboxFlags) options(args []string) (sandbox.Options, error) {
	var o sandbox.Options
	// The values are checked by sandbox.Run and Attach (ConfigError, see
	// flagError); here only what the library does not see.
	cidr, err := netip.ParsePrefix(f.cidr)
	if err != nil {
		return o, fmt.Errorf("invalid argument %q for \"--cidr\" flag: want %s", f.cidr, sandbox.Allowed("Gateway.CIDR"))
	}
	cidr6, err := netip.ParsePrefix(f.cidr6)
	if err != nil {
		return o, fmt.Errorf("invalid argument %q for \"--cidr6\" flag: want %s", f.cidr6, sandbox.Allowed("Gateway.CIDR6"))
	}
	if err := checkMetricsAddr(f.metrics); err != nil {
		return o, err
	}
	if f.procs < 0 || f.procs > maxProcs {
		return o, fmt.Errorf("invalid argument %d for \"--procs\" flag: want 0 (one per CPU) to %d", f.procs, maxProcs)
	}
	for _, z := range []struct {
		field string
		value any
		zero  bool
	}{
		{"MTU", f.mtu, f.mtu == 0},
		{"TxQueueLen", f.txQueueLen, f.txQueueLen == 0},
		{"Gateway.UDPTimeout", f.udpTimeout, f.udpTimeout == 0},
		{"Gateway.MaxFlows", f.maxFlows, f.maxFlows == 0},
		{"Gateway.RelayBuffer", f.relayBuffer, f.relayBuffer == 0},
	} {
		if z.zero {
			return o, zeroError(z.field, z.value)
		}
	}
	allow, err := parsePrefixList("allow", f.allow)
	if err != nil {
		return o, err
	}
	deny, err := parsePrefixList("deny", f.deny)
	if err != nil {
		return o, err
	}
	var upstream []netip.AddrPort
	if f.dnsUpstream != "" {
		ap, err := netip.ParseAddrPort(f.dnsUpstream)
		if err != nil {
			a, aerr := netip.ParseAddr(f.dnsUpstream)
			if aerr != nil {
				return o, fmt.Errorf("invalid argument %q for \"--dns-upstream\" flag: want ADDR:PORT such as 127.0.0.1:53 or [::1]:53", f.dnsUpstream)
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		upstream = []netip.AddrPort{ap}
	}
	var outbound []netip.Addr
	for _, v := range f.outbound {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return o, fmt.Errorf("invalid argument %q for \"--outbound-addr\" flag: want %s", v, sandbox.Allowed("Gateway.OutboundAddrs"))
		}
		outbound = append(outbound, a)
	}
	// Stricter than the library, which takes any positive duration.
	if f.idleTimeout < 0 || (f.idleTimeout > 0 && f.idleTimeout < time.Second) {
		return o, fmt.Errorf("invalid argument %v for \"--tcp-idle-timeout\" flag: want 0 (never) or at least 1s", f.idleTimeout)
	}
	for _, p := range f.publish {
		fw, err := sandbox.ParseForward(p)
		if err != nil {
			return o, fmt.Errorf("invalid argument for \"-p\" flag: %v", err)
		}
		o.Forwards = append(o.Forwards, fw)
	}
	if f.snapLen < 0 || f.snapLen > stack.DefaultCaptureSnapLen {
		return o, fmt.Errorf("invalid argument %d for \"--pcap-snaplen\" flag: want 0 (262144) or 1-262144", f.snapLen)
	}
	o.Command = args
	o.MTU = f.mtu
	o.TxQueueLen = f.txQueueLen
	o.IfName = f.ifName
	o.Gateway = sandbox.Config{
		CIDR:           cidr,
		CIDR6:          cidr6,
		NoIPv6:         f.noIPv6 || !f.ipv6,
		Ports:          portalloc.Config{TCP: portalloc.PoolConfig{Range: f.tcpRange, Policy: f.policy}, UDP: portalloc.PoolConfig{Range: f.udpRange, Policy: f.policy}},
		Policy:         sandbox.Policy{AllowHostLoopback: f.allowLoopback, Allow: allow, Deny: deny},
		DNSUpstream:    upstream,
		OutboundAddrs:  outbound,
		UDPTimeout:     f.udpTimeout,
		MaxFlows:       f.maxFlows,
		TCPIdleTimeout: f.idleTimeout,
		RelayBuffer:    f.relayBuffer,
		Logger:         f.level.logger(),
	}
	return o, nil
}
