package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ustacknet/ustack/tun"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultIfName is the sandbox's interface name.
const DefaultIfName = "ustack0"

// DefaultTxQueueLen is the transmit queue of the guest's interface, in
// packets: what the guest sends waits there until the gateway reads it,
// and what does not fit is dropped. The kernel's default for a TUN
// device, 500, is too short for a burst: a guest that opens 3,000 UDP
// flows back to back sends them in about 20 ms, while the gateway, on a
// loaded machine, can wait that long for a CPU (and each new flow costs it
// more than one datagram of an existing flow does). 4096 holds such a
// burst, and matches the gateway's hand-off queue behind the reader
// (tun), so what the queue holds the gateway can take in at once. The
// cost is the guest's: a packet in the queue keeps its buffer, charged to
// the sending socket, whose send buffer bounds it (and TCP's small-queue
// limit keeps a TCP flow's share to about 1 MiB whatever the queue).
const DefaultTxQueueLen = 4096

// initEnv carries the child's settings from Run to Init.
const initEnv = "USTACK_SANDBOX_INIT"

// Options configures Run.
type Options struct {
	// Gateway configures the host side; Run sets its Link.
	Gateway Config
	// MTU of the sandbox's interface, 1280-65520. Default 65520.
	MTU int
	// IfName is the interface name inside the sandbox. Default ustack0.
	IfName string
	// TxQueueLen is the guest interface's transmit queue, in packets
	// (tun.Config.TxQueueLen), 1 to tun.MaxTxQueueLen. Default
	// DefaultTxQueueLen. A TAP device that Attach finds made beforehand
	// keeps its own.
	TxQueueLen int
	// Forwards are added before the command starts.
	Forwards []Forward
	// Command and its arguments, run inside the sandbox.
	Command []string
	// Stdin, Stdout and Stderr of the command. Nil means os.Stdin etc.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Self is the path of a binary whose "sandbox-init" command calls
	// Init. Default: /proc/self/exe.
	Self string
	// Ready, if set, is called with the running Gateway and its TUN
	// device before the command starts (the CLI serves its API and
	// metrics from here).
	Ready func(*Gateway, *tun.Device) error
	// NoConfigure, for Attach: leave the device to the namespace's owner
	// to set up (slirp4netns without --configure). If the namespace has a
	// TAP device named IfName (made beforehand, as rootlesskit does),
	// Attach attaches to it and leaves it in place on return; otherwise it
	// creates a TUN device, down, without addresses or routes.
	NoConfigure bool
}

// childConfig is what the child needs to set up its side.
type childConfig struct {
	// Attach: only create and send the device (Attach's helper), no
	// command.
	Attach bool `json:"attach,omitempty"`
	Down   bool `json:"down,omitempty"` // no addresses, routes or up

	IfName     string         `json:"if_name"`
	MTU        int            `json:"mtu"`
	TxQueueLen int            `json:"tx_queue_len"`
	Addrs      []netip.Prefix `json:"addrs"`
	Gateway    []netip.Addr   `json:"gateways"`
}

// Run starts o.Command in new network namespace (and a new user namespace
// when not root) whose only network is a TUN device served by a Gateway,
// waits for it, tears everything down, and returns the command's exit code
// (128+N if it was killed by signal N). SIGINT and SIGTERM received
// meanwhile are passed to the command.
func Run(ctx context.Context, o Options) (int, error) {
	if len(o.Command) == 0 {
		return 0, errors.New("sandbox: no command given; use: ustack sandbox [flags] -- CMD [ARGS...]")
	}
	cc, err := o.fill()
	if err != nil {
		return 0, err
	}
	ccJSON, _ := json.Marshal(cc)

	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("sandbox: socketpair: %w", err)
	}
	parentSock := os.NewFile(uintptr(pair[0]), "sandbox-parent")
	childSock := os.NewFile(uintptr(pair[1]), "sandbox-child")
	defer parentSock.Close()

	cmd := exec.Command(o.Self, append([]string{"sandbox-init", "--"}, o.Command...)...)
	cmd.Env = append(os.Environ(), initEnv+"="+string(ccJSON))
	cmd.ExtraFiles = []*os.File{childSock}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.Stdin, o.Stdout, o.Stderr
	if cmd.Stdin == nil {
		cmd.Stdin = os.Stdin
	}
	if cmd.Stdout == nil {
		cmd.Stdout = os.Stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	// A PID namespace too, with the child as its init: when the child
	// ends, the kernel ends everything the command left behind, so no
	// process keeps the network namespace alive.
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	rootless := os.Geteuid() != 0
	if rootless {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	}
	cmd.SysProcAttr = attr

	exited, err := startLocked(cmd)
	childSock.Close()
	if err != nil {
		return 0, startError(err, rootless)
	}
	kill := func() {
		cmd.Process.Kill()
		<-exited
	}
	// Caught from here on: forwarded to the command once it runs, and
	// before that they end the set-up.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	// The child creates the TUN device in its namespace and sends it.
	fd, name, _, err := receiveTUN(parentSock, exited)
	if err != nil {
		kill()
		var nf *NotFoundError
		if errors.As(err, &nf) {
			return 127, err
		}
		return 1, err
	}
	dev, err := tun.FromFD(fd, name, o.MTU) // closes fd on failure
	if err != nil {
		kill()
		return 0, err
	}
	defer dev.Close()
	gw, err := o.serve(dev)
	if err != nil {
		kill()
		return 0, err
	}
	defer gw.Close()
	// SIGINT or SIGTERM during the set-up (they are caught from the
	// start, see above): the command never starts.
	select {
	case s := <-sigs:
		kill()
		return 128 + int(s.(syscall.Signal)), nil
	default:
	}
	if _, err := parentSock.Write([]byte{'G'}); err != nil {
		kill()
		return 0, fmt.Errorf("sandbox: starting the command: %w", err)
	}
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				return exitCode(err), nil
			case <-time.After(5 * time.Second):
				kill()
				return 128 + int(syscall.SIGKILL), nil
			}
		case err := <-exited:
			return exitCode(err), nil
		}
	}
}

// startLocked starts cmd, and waits for it, on a goroutine locked to its
// OS thread: a child's parent-death signal is tied to the thread that
// started it, not to the process, so that thread must live as long as the
// child. It returns Start's error and the channel that gets Wait's.
func startLocked(cmd *exec.Cmd) (chan error, error) {
	started := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	return exited, <-started
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}

func startError(err error, rootless bool) error {
	if rootless && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EINVAL)) {
		return fmt.Errorf("sandbox: creating a user and network namespace failed (%w): rootless mode needs unprivileged user namespaces; check that sysctl user.max_user_namespaces is above 0 and kernel.unprivileged_userns_clone (where present) is 1, or run as root", err)
	}
	if errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("sandbox: creating a network namespace failed (%w): needs CAP_SYS_ADMIN, or run as a normal user to use a user namespace", err)
	}
	return fmt.Errorf("sandbox: starting the sandbox: %w", err)
}

// receiveTUN reads the child's message: the TUN descriptor and its name,
// or an error. It gives up if the child exits first.
func receiveTUN(sock *os.File, exited chan error) (int, string, int, error) {
	type msg struct {
		fd   int
		name string
		mtu  int // 0 if not sent
		err  error
	}
	got := make(chan msg, 1)
	go func() {
		buf := make([]byte, 4096)
		oob := make([]byte, unix.CmsgSpace(4))
		n, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			got <- msg{err: fmt.Errorf("sandbox: receiving the TUN device: %w", err)}
			return
		}
		if n == 0 {
			got <- msg{err: errors.New("sandbox: the sandbox process ended before creating its network")}
			return
		}
		switch buf[0] {
		case 'E':
			got <- msg{err: errors.New(string(buf[1:n]))}
			return
		case 'N':
			got <- msg{err: &NotFoundError{msg: string(buf[1:n])}}
			return
		}
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(cmsgs) != 1 {
			got <- msg{err: fmt.Errorf("sandbox: bad message from the sandbox process: %v", err)}
			return
		}
		fds, err := unix.ParseUnixRights(&cmsgs[0])
		if err != nil || len(fds) != 1 {
			got <- msg{err: fmt.Errorf("sandbox: bad descriptor from the sandbox process: %v", err)}
			return
		}
		name, mtu, _ := strings.Cut(string(buf[1:n]), "\x00")
		m := msg{fd: fds[0], name: name}
		m.mtu, _ = strconv.Atoi(mtu)
		got <- m
	}()
	select {
	case m := <-got:
		return m.fd, m.name, m.mtu, m.err
	case err := <-exited:
		exited <- err
		// The child may have sent its error just before exiting: with its
		// end closed, the reader gets the message (or the end of the
		// stream) at once, though maybe after Wait returned. Bounded, in
		// case something else still holds that end.
		select {
		case m := <-got:
			if m.err != nil {
				return 0, "", 0, m.err
			}
			// The device came before the exit: Attach's helper exits
			// as soon as it has sent it, and on a loaded machine its
			// exit can be seen first. Run's child, which waits for
			// the go-ahead, is caught when that write fails.
			return m.fd, m.name, m.mtu, nil
		case <-time.After(2 * time.Second):
		}
		return 0, "", 0, fmt.Errorf("sandbox: the sandbox process exited before creating its network: %v", err)
	}
}

// NotFoundError reports that the command to run was not found; Run
// returns exit code 127 with it, as shells do.
type NotFoundError struct{ msg string }

func (e *NotFoundError) Error() string { return e.msg }

// IsInit reports whether this process was started by Run as a sandbox
// child; its main function must then call Init.
func IsInit() bool { return os.Getenv(initEnv) != "" }

// Init is the child's side of Run: inside the new namespaces it brings up
// lo, creates and configures the TUN device, sends it to the parent over
// descriptor 3, waits for the parent's go-ahead and then execs args. It
// returns only on failure, with the exit code to use.
func Init(args []string) int {
	sock := os.NewFile(3, "sandbox-sock")
	fail := func(format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		sock.Write(append([]byte{'E'}, msg...))
		return 127
	}
	var cc childConfig
	if err := json.Unmarshal([]byte(os.Getenv(initEnv)), &cc); err != nil {
		return fail("sandbox: bad settings from the parent: %v", err)
	}
	os.Unsetenv(initEnv)
	if cc.Attach {
		return initAttach(sock, cc)
	}
	if len(args) == 0 {
		return fail("sandbox: no command")
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		sock.Write(append([]byte{'N'}, fmt.Sprintf("sandbox: command %q: %v", args[0], err)...))
		return 127
	}
	// Addresses are usable at once: no duplicate address detection on a
	// link that has nobody else on it.
	for _, f := range []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"} {
		os.WriteFile(f, []byte("0"), 0)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fail("sandbox: netlink: %v", err)
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		h.LinkSetUp(lo)
	}
	dev, err := tun.Open(tun.Config{Name: cc.IfName, MTU: cc.MTU, TxQueueLen: cc.TxQueueLen, Addrs: cc.Addrs, Up: true})
	if err != nil {
		if errors.Is(err, os.ErrPermission) && os.Getuid() == 0 && isUserNS() {
			return fail("sandbox: rootless mode needs /dev/net/tun to be usable by your user (the usual mode is 0666; here it is %s): %v", tunMode(), err)
		}
		return fail("sandbox: creating the sandbox's interface: %v", err)
	}
	noSLAAC(dev.Name(), cc.Addrs)
	if err := addDefaultRoutes(h, dev.Name(), cc.Gateway); err != nil {
		return fail("%v", err)
	}
	h.Close()
	f, err := dev.DupFile()
	if err != nil {
		return fail("sandbox: %v", err)
	}
	if err := unix.Sendmsg(3, append([]byte{'T'}, dev.Name()...), unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
		return fail("sandbox: sending the interface: %v", err)
	}
	f.Close()
	// The parent owns the device now; the child's descriptors close on
	// exec. Wait for the go-ahead.
	b := make([]byte, 1)
	if n, _ := sock.Read(b); n != 1 || b[0] != 'G' {
		return 1
	}
	sock.Close()
	if os.Getpid() != 1 {
		err = syscall.Exec(path, args, os.Environ())
		fmt.Fprintf(os.Stderr, "ustack sandbox: exec %s: %v\n", path, err)
		return 127
	}
	return initLoop(path, args)
}

// initAttach is Attach's helper, run by nsenter inside the target's user
// and network namespaces: it creates and configures the device, sends it
// and exits.
func initAttach(sock *os.File, cc childConfig) int {
	fail := func(format string, a ...any) int {
		sock.Write(append([]byte{'E'}, fmt.Sprintf(format, a...)...))
		return 1
	}
	// Inside the target's namespaces already (nsenter put this process
	// there).
	dev, err := openGuestDevice(nil, cc)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fail("sandbox: attaching without root needs /dev/net/tun to be usable by your user (the usual mode is 0666; here it is %s): %v", tunMode(), err)
		}
		return fail("%v", err)
	}
	defer dev.Close()
	f, err := dev.DupFile()
	if err != nil {
		return fail("sandbox: %v", err)
	}
	defer f.Close()
	msg := append([]byte{'T'}, dev.Name()...)
	msg = append(msg, fmt.Sprintf("\x00%d", dev.MTU())...)
	if err := unix.Sendmsg(int(sock.Fd()), msg, unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
		return fail("sandbox: sending the interface: %v", err)
	}
	return 0
}

func tunMode() string {
	fi, err := os.Stat("/dev/net/tun")
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%04o", fi.Mode().Perm())
}

// initLoop is PID 1 of the sandbox's PID namespace: it runs the command,
// passes signals on to it, reaps every orphan, and returns the command's
// exit code (128+N if signal N killed it). When it returns, the kernel
// kills whatever else is left in the namespace.
func initLoop(path string, args []string) int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCHLD)
	pid, err := syscall.ForkExec(path, args, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ustack sandbox: starting %s: %v\n", path, err)
		return 127
	}
	for {
		// Reap everything that has exited.
		for {
			var ws syscall.WaitStatus
			wpid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err != nil || wpid <= 0 {
				break
			}
			if wpid == pid {
				if ws.Signaled() {
					return 128 + int(ws.Signal())
				}
				return ws.ExitStatus()
			}
		}
		s := <-sigs
		if s != syscall.SIGCHLD {
			syscall.Kill(pid, s.(syscall.Signal))
		}
	}
}

// isUserNS reports whether the process is in a user namespace other than
// the initial one.
func isUserNS() bool {
	data, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	return !(len(data) > 0 && string(data) != "" && containsFullMap(string(data)))
}

func containsFullMap(s string) bool {
	var a, b, c uint64
	n, _ := fmt.Sscan(s, &a, &b, &c)
	return n == 3 && a == 0 && b == 0 && c == 4294967295
}
