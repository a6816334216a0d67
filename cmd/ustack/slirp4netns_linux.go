package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/ustacknet/ustack/sandbox"
	"github.com/ustacknet/ustack/tun"
)

// slirpArgs makes the ustack binary answer to slirp4netns's command line
// when it runs under that name (a symlink), so that tools that start
// slirp4netns can start ustack instead.
func slirpArgs(args []string) []string {
	if filepath.Base(os.Args[0]) == "slirp4netns" {
		return append([]string{"slirp4netns"}, args...)
	}
	return args
}

type slirpFlags struct {
	configure           bool
	exitFD, readyFD     int
	mtu                 int
	ipv6                bool
	apiSocket           string
	cidr                string
	disableHostLoopback bool
	netnsType           string
	usernsPath          string
	enableSandbox       bool
	enableSeccomp       bool
	outbound, outbound6 string
	disableDNS          bool
	macAddress          string
	targetType          string
	version             bool
}

func newSlirpCmd() *cobra.Command {
	var f slirpFlags
	c := &cobra.Command{
		Use:   "slirp4netns [OPTION]... PID|PATH [TAPNAME]",
		Short: "Serve a network namespace with slirp4netns's command line and API socket",
		Long: `slirp4netns serves an existing network namespace as slirp4netns does, with
its command line, defaults and --api-socket protocol (add_hostfwd,
list_hostfwd, remove_hostfwd), on ustack's gateway: a drop-in for tools that
start slirp4netns (run the ustack binary under the name slirp4netns, through
a symlink, to answer to that command line directly).

As in slirp4netns: MTU 1500, IPv6 only with --enable-ipv6, the host's
loopback reachable at 10.0.2.2 unless --disable-host-loopback, addresses and
routes set only with --configure. Without --configure, a TAP device named
TAPNAME that the caller made beforehand (as rootlesskit does) is attached
to and left in place on exit. Differences: otherwise the interface is a TUN
device (layer 3), so --macaddress is refused; --enable-sandbox is accepted
but not implemented (a warning says so); --enable-seccomp installs a deny
list (running programs, namespaces, mounts, tracing, kernel code; EPERM)
rather than slirp4netns's allow list; --target-type bess is refused.`,
		Example: `  unshare --user --map-root-user --net sleep infinity & ustack slirp4netns --configure --mtu 65520 $! tap0`,
		Args: func(c *cobra.Command, args []string) error {
			if f.version {
				return nil
			}
			if len(args) < 1 || len(args) > 2 {
				return usageError{errors.New("want PID|PATH [TAPNAME], as in: ustack slirp4netns --configure 4242 tap0")}
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if f.version {
				fmt.Fprintln(c.OutOrStdout(), "ustack slirp4netns: slirp4netns 1.2 command line and API socket on ustack's gateway")
				return nil
			}
			o, t, err := f.options(args)
			if err != nil {
				return flagError("slirp4netns", usageError{err})
			}
			ctx, ctl, stop, err := startControl(c.Context(), f.readyFD, f.exitFD, "enable-seccomp", f.enableSeccomp)
			if err != nil {
				return usageError{err}
			}
			defer stop()
			if f.enableSandbox {
				fmt.Fprintln(c.ErrOrStderr(), "ustack slirp4netns: warning: --enable-sandbox is not implemented: no mount namespace, capabilities kept")
			}
			if os.Getenv("GOMAXPROCS") == "" {
				runtime.GOMAXPROCS(1) // as ustack sandbox --procs 1
			}
			var (
				apiL    net.Listener
				apiDone chan error
			)
			o.Ready = ctl.readyHook(func(gw *sandbox.Gateway, _ *tun.Device) error {
				if f.apiSocket == "" {
					return nil
				}
				// As slirp4netns: a socket left by an earlier run is
				// removed; anything else there is not ours to remove.
				if fi, err := os.Lstat(f.apiSocket); err == nil {
					if fi.Mode()&os.ModeSocket == 0 {
						return fmt.Errorf("--api-socket %s: exists and is not a socket", f.apiSocket)
					}
					if err := os.Remove(f.apiSocket); err != nil {
						return fmt.Errorf("--api-socket: removing the old socket: %w", err)
					}
				}
				l, err := net.Listen("unix", f.apiSocket)
				if err != nil {
					return fmt.Errorf("--api-socket: %w", err)
				}
				apiL, apiDone = l, make(chan error, 1)
				go func() { apiDone <- sandbox.NewSlirpAPI(gw).Serve(l) }()
				return nil
			})
			code, err := sandbox.Attach(ctx, o, t)
			if apiL != nil {
				apiL.Close() // removes the socket file
				<-apiDone
			}
			if err != nil {
				return flagError("slirp4netns", err)
			}
			if code != 0 {
				return exitStatus(code)
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.BoolVarP(&f.configure, "configure", "c", false, "bring up the interface: the guest's address (.100 of --cidr, and fd00::100/64 with -6) and default routes via the gateway (.2)")
	fl.IntVarP(&f.exitFD, "exit-fd", "e", -1, "specify the FD for terminating slirp4netns")
	fl.IntVarP(&f.readyFD, "ready-fd", "r", -1, "specify the FD to write to when the network is configured")
	fl.IntVarP(&f.mtu, "mtu", "m", 1500, "specify MTU (1280-65520)")
	fl.BoolVarP(&f.ipv6, "enable-ipv6", "6", false, "enable IPv6 (fd00::100/64, gateway fd00::2, DNS fd00::3)")
	fl.StringVarP(&f.apiSocket, "api-socket", "a", "", "specify API socket path")
	fl.StringVar(&f.cidr, "cidr", sandbox.DefaultCIDR.String(), "specify network address CIDR")
	fl.BoolVar(&f.disableHostLoopback, "disable-host-loopback", false, "prohibit connecting to 127.0.0.1:* on the host namespace")
	fl.StringVar(&f.netnsType, "netns-type", "pid", "specify network namespace type ([path|pid])")
	fl.StringVar(&f.usernsPath, "userns-path", "", "specify user namespace path")
	fl.BoolVar(&f.enableSandbox, "enable-sandbox", false, "accepted; not implemented by ustack (a warning says so)")
	fl.BoolVar(&f.enableSeccomp, "enable-seccomp", false, "once the network is up, deny system calls a gateway never needs (running programs, namespaces, mounts, tracing, kernel modules; see ustack's internal/seccomp)")
	fl.StringVar(&f.outbound, "outbound-addr", "", "sets outbound IPv4 address (or interface) to bind to")
	fl.StringVar(&f.outbound6, "outbound-addr6", "", "sets outbound IPv6 address (or interface) to bind to")
	fl.BoolVar(&f.disableDNS, "disable-dns", false, "disables the DNS forwarder at 10.0.2.3")
	fl.StringVar(&f.macAddress, "macaddress", "", "refused: the device ustack makes is a TUN device, without a MAC address")
	fl.StringVar(&f.targetType, "target-type", "netns", "specify the target type ([netns]; bess is not supported)")
	fl.BoolVarP(&f.version, "version", "v", false, "show version and exit")
	return c
}

// options turns slirp4netns's flags and arguments into an Attach.
func (f *slirpFlags) options(args []string) (sandbox.Options, sandbox.Target, error) {
	var o sandbox.Options
	var t sandbox.Target
	if f.macAddress != "" {
		return o, t, errors.New("--macaddress: the device ustack makes is a TUN device (layer 3), which has no MAC address; set the MAC of a TAP device you make beforehand instead (ustack attaches to one without -c)")
	}
	if f.targetType != "netns" {
		return o, t, fmt.Errorf("invalid argument %q for \"--target-type\" flag: only netns is supported", f.targetType)
	}
	// The values are checked by sandbox.Attach (ConfigError, see
	// flagError); here only what the library does not see.
	if f.mtu == 0 {
		return o, t, zeroError("MTU", f.mtu)
	}
	cidr, err := netip.ParsePrefix(f.cidr)
	if err != nil {
		return o, t, fmt.Errorf("invalid argument %q for \"--cidr\" flag: want %s", f.cidr, sandbox.Allowed("Gateway.CIDR"))
	}
	switch f.netnsType {
	case "pid":
		pid, err := strconv.ParseInt(args[0], 10, 64)
		if err != nil || pid < 1 || pid > maxPID {
			return o, t, fmt.Errorf("invalid PID %q: want 1 to %d (or --netns-type=path)", args[0], maxPID)
		}
		t.PID = int(pid)
	case "path":
		t.NetNS = args[0]
	default:
		return o, t, fmt.Errorf("invalid argument %q for \"--netns-type\" flag: want pid or path", f.netnsType)
	}
	t.UserNS = f.usernsPath
	ifName := "tap0"
	if len(args) == 2 {
		ifName = args[1]
	}
	if ifName == "" {
		// Not the default here, as it is to the library.
		return o, t, &sandbox.ConfigError{Field: "IfName", Value: ifName, Allowed: sandbox.Allowed("IfName")}
	}
	var outbound []netip.Addr
	for _, v := range []struct {
		flag, val string
		six       bool
	}{{"outbound-addr", f.outbound, false}, {"outbound-addr6", f.outbound6, true}} {
		if v.val == "" {
			continue
		}
		a, err := outboundAddr(v.val, v.six)
		if err != nil {
			return o, t, fmt.Errorf("invalid argument %q for \"--%s\" flag: %v", v.val, v.flag, err)
		}
		outbound = append(outbound, a)
	}
	o = sandbox.Options{
		MTU:         f.mtu,
		IfName:      ifName,
		NoConfigure: !f.configure,
		Gateway: sandbox.Config{
			CIDR:          cidr,
			NoIPv6:        !f.ipv6,
			Policy:        sandbox.Policy{AllowHostLoopback: !f.disableHostLoopback},
			NoDNS:         f.disableDNS,
			OutboundAddrs: outbound,
			// As slirp4netns: with IPv6, the guest learns its prefix and
			// router from advertisements.
			RouterAdvertisements: f.ipv6,
		},
	}
	return o, t, nil
}

// outboundAddr is an address of the wanted family, given as such or as an
// interface whose first address of that family (global first) it takes.
func outboundAddr(v string, six bool) (netip.Addr, error) {
	fam := map[bool]string{false: "IPv4", true: "IPv6"}[six]
	if a, err := netip.ParseAddr(v); err == nil {
		if a.Unmap().Is4() == six {
			return netip.Addr{}, fmt.Errorf("want an %s address or an interface name", fam)
		}
		return a.Unmap(), nil
	}
	ifi, err := net.InterfaceByName(v)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("neither an %s address nor an interface: %v", fam, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, err
	}
	var best netip.Addr
	for _, ad := range addrs {
		p, err := netip.ParsePrefix(ad.String())
		if err != nil {
			continue
		}
		a := p.Addr().Unmap()
		if a.Is4() == six || (best.IsValid() && best.IsGlobalUnicast()) {
			continue
		}
		if !best.IsValid() || a.IsGlobalUnicast() {
			best = a
		}
	}
	if !best.IsValid() {
		return netip.Addr{}, fmt.Errorf("interface %s has no %s address", v, fam)
	}
	return best, nil
}
