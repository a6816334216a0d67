package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/tun"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Target is an existing network namespace for Attach to serve, as
// slirp4netns and pasta serve one given by PID or path (rootless
// container engines start them so).
type Target struct {
	// PID, if not 0, names the namespace of that process
	// (/proc/PID/ns/net), and Attach returns when the process exits.
	PID int
	// NetNS is the namespace's file when PID is 0: /proc/PID/ns/net,
	// /run/netns/NAME, or any bind mount of one.
	NetNS string
	// UserNS is the user namespace to join to create the device when
	// ustack is not root. Default: the one that owns the network
	// namespace. Joining goes through nsenter(1) from util-linux, because
	// a multithreaded process (any Go program) cannot join a user
	// namespace itself.
	UserNS string
}

// nsenterPath is the nsenter(1) binary for rootless Attach.
var nsenterPath = "nsenter"

// Attach serves t's network namespace: it creates o.IfName there with the
// guest's addresses and default routes via the gateway, serves it with a
// Gateway, and returns 0 when ctx is done, SIGINT or SIGTERM arrives, or
// t.PID exits (1 and an error if someone deletes the device). The device
// is deleted on return (unless it is a TAP device made beforehand, see
// Options.NoConfigure); nothing else in the namespace is touched (its lo
// keeps its state). While it runs, the device's descriptor keeps the
// namespace alive, as slirp4netns's and pasta's do, so a namespace given
// by path is served until ctx, a signal or the device's deletion ends it.
// o.Command must be empty.
func Attach(ctx context.Context, o Options, t Target) (int, error) {
	if len(o.Command) != 0 {
		return 0, errors.New("sandbox: a command and a namespace to attach to are exclusive")
	}
	cc, err := o.fill()
	if err != nil {
		return 0, err
	}
	if o.NoConfigure {
		cc.Addrs, cc.Gateway, cc.Down = nil, nil, true
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	var exited <-chan struct{}
	path := t.NetNS
	switch {
	case t.PID < 0:
		return 0, fmt.Errorf("sandbox: PID %d: want a process ID above 0", t.PID)
	case t.PID > 0:
		if t.NetNS != "" {
			return 0, errors.New("sandbox: give a PID or a namespace path, not both")
		}
		w, err := watchPID(t.PID)
		if err != nil {
			return 0, err
		}
		defer w.Close()
		exited = w.done
		path = fmt.Sprintf("/proc/%d/ns/net", t.PID)
	case path == "":
		return 0, errors.New("sandbox: no namespace to attach to: give a PID or a path such as /run/netns/NAME")
	}
	nsf, err := openNetNS(path)
	if err != nil {
		return 0, err
	}
	if t.UserNS != "" {
		// Checked even where it is not needed (as root), rather than
		// ignored when wrong.
		f, err := openUserNS(t.UserNS)
		if err != nil {
			nsf.Close()
			return 0, err
		}
		f.Close()
	}

	var dev *tun.Device
	if os.Geteuid() == 0 {
		dev, err = openGuestDevice(nsf, cc)
	} else {
		dev, err = openViaUserNS(nsf, t.UserNS, cc, o.Self)
	}
	// Not kept open: ustack does not keep a namespace alive that its
	// processes and mounts have left.
	nsf.Close()
	if err != nil {
		return 1, err
	}
	defer dev.Close() // deletes the device in the namespace
	gw, err := o.serve(dev)
	if err != nil {
		return 1, err
	}
	defer gw.Close()
	select {
	case <-ctx.Done():
	case <-sigs:
	case <-exited:
	case <-dev.Gone():
		return 1, fmt.Errorf("sandbox: %s was deleted in the namespace (ip link del); stopping", dev.Name())
	}
	return 0, nil
}

// fill validates o and fills in its defaults, and returns what the guest's
// side needs.
func (o *Options) fill() (childConfig, error) {
	if o.MTU == 0 {
		o.MTU = DefaultMTU
	}
	if o.MTU < 1280 || o.MTU > 65520 {
		return childConfig{}, fmt.Errorf("sandbox: MTU %d: want 1280-65520", o.MTU)
	}
	if o.IfName == "" {
		o.IfName = DefaultIfName
	}
	if o.TxQueueLen == 0 {
		o.TxQueueLen = DefaultTxQueueLen
	}
	if o.TxQueueLen < 1 || o.TxQueueLen > tun.MaxTxQueueLen {
		return childConfig{}, fmt.Errorf("sandbox: TxQueueLen %d: want 1-%d packets", o.TxQueueLen, tun.MaxTxQueueLen)
	}
	if o.Self == "" {
		o.Self = "/proc/self/exe"
	}
	addrs, err := o.Gateway.AddrsOf()
	if err != nil {
		return childConfig{}, err
	}
	cc := childConfig{IfName: o.IfName, MTU: o.MTU, TxQueueLen: o.TxQueueLen, Addrs: []netip.Prefix{addrs.Guest}, Gateway: []netip.Addr{addrs.Gateway.Addr()}}
	if addrs.Guest6.IsValid() {
		cc.Addrs = append(cc.Addrs, addrs.Guest6)
		cc.Gateway = append(cc.Gateway, addrs.Gateway6.Addr())
	}
	return cc, nil
}

// serve starts a Gateway on dev with o's forwards, and calls o.Ready.
// The caller closes dev after the Gateway.
func (o *Options) serve(dev *tun.Device) (*Gateway, error) {
	gcfg := o.Gateway
	gcfg.Link = dev.LinkEndpoint()
	gw, err := NewGateway(gcfg)
	if err != nil {
		return nil, err
	}
	for _, f := range o.Forwards {
		if err := gw.AddForward(f); err != nil {
			gw.Close()
			return nil, err
		}
	}
	if o.Ready != nil {
		if err := o.Ready(gw, dev); err != nil {
			gw.Close()
			return nil, err
		}
	}
	return gw, nil
}

// pidWatch reports when a process exits, through a pidfd in Go's poller.
type pidWatch struct {
	f       *os.File
	done    chan struct{} // closed when the process exits
	stopped chan struct{} // closed when the watching goroutine ends
}

func watchPID(pid int) (*pidWatch, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("sandbox: PID %d: no such process", pid)
		}
		return nil, fmt.Errorf("sandbox: PID %d: pidfd_open: %w", pid, err)
	}
	w := &pidWatch{f: os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid)), done: make(chan struct{}), stopped: make(chan struct{})}
	rc, err := w.f.SyscallConn()
	if err != nil {
		w.f.Close()
		return nil, err
	}
	go func() {
		defer close(w.stopped)
		// A pidfd turns readable when the process exits. Close ends the
		// wait too (with an error), which is then not an exit.
		var exited bool
		rc.Read(func(fd uintptr) bool {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, _ := unix.Poll(p, 0)
			exited = n > 0
			return exited
		})
		if exited {
			close(w.done)
		}
	}()
	return w, nil
}

// Close stops watching and waits for the watcher to end.
func (w *pidWatch) Close() {
	w.f.Close()
	<-w.stopped
}

// openNetNS opens path and checks that it is a network namespace other
// than ustack's own.
func openNetNS(path string) (*os.File, error) {
	f, err := openNoBlock(path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) && os.Geteuid() != 0 {
			return nil, fmt.Errorf("sandbox: namespace: %w (a normal user can serve only namespaces of its own processes, made as by unshare --user --map-root-user --net)", err)
		}
		return nil, fmt.Errorf("sandbox: namespace: %w", err)
	}
	typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil || typ != unix.CLONE_NEWNET {
		f.Close()
		return nil, fmt.Errorf("sandbox: %s is not a network namespace (want /proc/PID/ns/net, /run/netns/NAME or a bind mount of one)", path)
	}
	var target, own unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &target); err != nil {
		f.Close()
		return nil, fmt.Errorf("sandbox: %s: %w", path, err)
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &own); err == nil && own.Ino == target.Ino && own.Dev == target.Dev {
		f.Close()
		return nil, fmt.Errorf("sandbox: %s is ustack's own network namespace; give the sandbox's", path)
	}
	return f, nil
}

// openUserNS opens path and checks that it is a user namespace.
func openUserNS(path string) (*os.File, error) {
	f, err := openNoBlock(path)
	if err != nil {
		return nil, fmt.Errorf("sandbox: user namespace: %w", err)
	}
	if typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE); err != nil || typ != unix.CLONE_NEWUSER {
		f.Close()
		return nil, fmt.Errorf("sandbox: %s is not a user namespace (want /proc/PID/ns/user or a bind mount of one)", path)
	}
	return f, nil
}

// openNoBlock opens path for reading without blocking: a namespace file
// does not care, and a FIFO given by mistake must not hang the open.
func openNoBlock(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}

// openGuestDevice makes the guest's device in the namespace nsf (nil: the
// one the whole process is in, as Attach's helper is): a TAP device made
// there beforehand if cc.Down and there is one (see Options.NoConfigure),
// else a new TUN device with cc's addresses and default routes. Creating
// one needs CAP_NET_ADMIN over the namespace.
func openGuestDevice(nsf *os.File, cc childConfig) (*tun.Device, error) {
	if cc.Down {
		dev, err := tun.OpenTAP(cc.IfName, cc.MTU, nsf)
		if err == nil {
			return dev, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("sandbox: attaching to %s: %w", cc.IfName, err)
		}
	}
	dev, err := tun.Open(tun.Config{Name: cc.IfName, MTU: cc.MTU, TxQueueLen: cc.TxQueueLen, Addrs: cc.Addrs, Up: !cc.Down, NetNS: nsf})
	if err != nil {
		return nil, fmt.Errorf("sandbox: creating the interface: %w", err)
	}
	routes := func() error {
		noSLAAC(dev.Name(), cc.Addrs)
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("sandbox: netlink: %w", err)
		}
		defer h.Close()
		return addDefaultRoutes(h, dev.Name(), cc.Gateway)
	}
	if nsf != nil {
		err = netns.DoIn(nsf, routes)
	} else {
		err = routes()
	}
	if err != nil {
		dev.Close()
		return nil, err
	}
	return dev, nil
}

// noSLAAC turns address autoconfiguration off on the guest's link name
// when addrs (what ustack assigned there) include an IPv6 address, in the
// calling thread's network namespace. The gateway's router advertisements
// still give the route and the MTU, but the guest keeps the one address
// the sandbox documents, instead of gaining a second one from the prefix
// some time after its command started, tentative at first. Best effort:
// where /proc/sys is read-only the guest just gets both.
func noSLAAC(name string, addrs []netip.Prefix) {
	for _, p := range addrs {
		if p.Addr().Is6() {
			os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/autoconf", []byte("0"), 0)
			return
		}
	}
}

// addDefaultRoutes adds a default route via each gateway on link name.
func addDefaultRoutes(h *netlink.Handle, name string, gws []netip.Addr) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("sandbox: %s: %w", name, err)
	}
	for _, gw := range gws {
		dst := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
		if gw.Is6() {
			dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: gw.AsSlice()}); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("sandbox: default route via %s: the namespace already has a default route (%w)", gw, err)
			}
			return fmt.Errorf("sandbox: default route via %s: %w", gw, err)
		}
	}
	return nil
}

// openViaUserNS creates the device from a helper that joins the user
// namespace owning nsf (or userNS) and nsf itself through nsenter(1), and
// hands the device back over a socket, as Run's child does.
func openViaUserNS(nsf *os.File, userNS string, cc childConfig, self string) (*tun.Device, error) {
	var usf *os.File
	if userNS != "" {
		f, err := openUserNS(userNS)
		if err != nil {
			return nil, err
		}
		usf = f
	} else {
		fd, err := unix.IoctlRetInt(int(nsf.Fd()), unix.NS_GET_USERNS)
		if err != nil {
			return nil, fmt.Errorf("sandbox: finding the namespace's owner: %w", err)
		}
		usf = os.NewFile(uintptr(fd), "userns")
	}
	defer usf.Close()
	var target, own unix.Stat_t
	if unix.Fstat(int(usf.Fd()), &target) == nil && unix.Stat("/proc/self/ns/user", &own) == nil && target.Ino == own.Ino && target.Dev == own.Dev {
		return nil, errors.New("sandbox: the namespace belongs to ustack's own user namespace, where it lacks CAP_NET_ADMIN: run as root, or attach to a namespace created by your user (as by unshare --user --map-root-user --net)")
	}
	nsenter, err := exec.LookPath(nsenterPath)
	if err != nil {
		return nil, fmt.Errorf("sandbox: attaching without root needs nsenter(1) from util-linux to join the user namespace: %w", err)
	}
	if self == "/proc/self/exe" {
		// nsenter would find itself there.
		if self, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
	}
	cc.Attach = true
	ccJSON, _ := json.Marshal(cc)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: socketpair: %w", err)
	}
	parentSock := os.NewFile(uintptr(pair[0]), "sandbox-parent")
	childSock := os.NewFile(uintptr(pair[1]), "sandbox-child")
	defer parentSock.Close()
	// ExtraFiles: the socket is descriptor 3, the namespaces 4 and 5,
	// which nsenter opens by path in its own /proc/self/fd.
	// --preserve-credentials: the user keeps its own IDs, which the
	// namespace's owner maps (usually to 0); setting groups is commonly
	// denied there.
	cmd := exec.Command(nsenter, "--preserve-credentials", "--user=/proc/self/fd/4", "--net=/proc/self/fd/5", "--", self, "sandbox-init")
	cmd.Env = append(os.Environ(), initEnv+"="+string(ccJSON))
	cmd.ExtraFiles = []*os.File{childSock, usf, nsf}
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited, err := startLocked(cmd)
	childSock.Close()
	if err != nil {
		return nil, fmt.Errorf("sandbox: starting nsenter: %w", err)
	}
	fd, name, mtu, err := receiveTUN(parentSock, exited)
	if err != nil {
		cmd.Process.Kill()
		<-exited
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("sandbox: joining the namespace's user namespace with nsenter failed: %s", msg)
		}
		return nil, err
	}
	if err := <-exited; err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sandbox: the helper that created the interface failed: %v %s", err, strings.TrimSpace(stderr.String()))
	}
	if mtu == 0 {
		mtu = cc.MTU
	}
	return tun.FromFD(fd, name, mtu)
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
