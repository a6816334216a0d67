package nsexec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/ustacknet/ustack/tun"
	"golang.org/x/sys/unix"
)

// nsenterPath is the nsenter(1) binary that OpenDevice runs when not
// root.
var nsenterPath = "nsenter"

// OpenNetNS opens path and checks that it is a network namespace other
// than the caller's own. A FIFO or other file given by mistake is
// refused, not waited on.
func OpenNetNS(path string) (*os.File, error) {
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

// OpenUserNS opens path and checks that it is a user namespace.
func OpenUserNS(path string) (*os.File, error) {
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

// OpenDevice makes g's device in the network namespace nsf (from
// OpenNetNS), which must not be the caller's own. As root the caller
// makes it there itself. Otherwise a helper does: self (a binary whose
// main calls Init when IsInit; default DefaultSelf) run through
// nsenter(1), which joins the user namespace that owns nsf, or userNS if
// not "", and nsf itself (a multithreaded process such as any Go program
// cannot join a user namespace), and hands the device back. The device's
// descriptor stays in the caller's namespace; nsf may be closed once
// OpenDevice returns.
func OpenDevice(nsf *os.File, userNS string, g Guest, self string) (*tun.Device, error) {
	if os.Geteuid() == 0 {
		return makeDevice(nsf, g)
	}
	return openViaUserNS(nsf, userNS, g, self)
}

// openViaUserNS is OpenDevice's path without root.
func openViaUserNS(nsf *os.File, userNS string, g Guest, self string) (*tun.Device, error) {
	var usf *os.File
	if userNS != "" {
		f, err := OpenUserNS(userNS)
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
	if self == "" || self == DefaultSelf {
		// nsenter would find itself there.
		if self, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
	}
	ccJSON, _ := json.Marshal(childConfig{Attach: true, Guest: g})
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
	m := receiveDevice(parentSock, exited)
	if m.err != nil {
		cmd.Process.Kill()
		<-exited
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("sandbox: joining the namespace's user namespace with nsenter failed: %s", msg)
		}
		return nil, m.err
	}
	if err := <-exited; err != nil {
		unix.Close(m.fd)
		return nil, fmt.Errorf("sandbox: the helper that created the interface failed: %v %s", err, strings.TrimSpace(stderr.String()))
	}
	if m.mtu == 0 {
		m.mtu = g.MTU
	}
	return tun.FromFD(m.fd, m.name, m.mtu)
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
