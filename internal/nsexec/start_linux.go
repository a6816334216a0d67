package nsexec

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultSelf is the binary that Start and OpenDevice re-execute by
// default: the running one.
const DefaultSelf = "/proc/self/exe"

// Spec is a command for Start to run in new namespaces.
type Spec struct {
	// Self is a binary whose main function calls Init when IsInit (its
	// arguments are "sandbox-init -- Args..."). Default DefaultSelf.
	Self string
	// Args is the command and its arguments; Args[0] is looked up in PATH
	// inside the namespaces.
	Args []string
	// Guest is the device the child makes and hands back.
	Guest Guest
	// Stdin, Stdout and Stderr of the command. Nil means os.Stdin etc.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Child is a command started by Start: its namespaces and device exist,
// and it waits for Run to let it start. Either Run or Kill must be called.
type Child struct {
	// FD is the guest's device, handed back by the child; the caller
	// owns it (tun.FromFD).
	FD int
	// Name is the device's name inside the namespace.
	Name string

	cmd    *exec.Cmd
	sock   *os.File   // the parent's end of the hand-back socket
	exited chan error // Wait's result; whoever takes it puts it back
}

// Start re-executes s.Self in new network and PID namespaces, and a new
// user namespace mapping the caller to root when the caller is not root,
// with the child as PID 1 of its PID namespace: when it ends, the kernel
// ends everything the command left behind, so no process keeps the
// network namespace alive. The child brings up lo, makes s.Guest's
// device and hands it back; Start returns once it has it. The child is
// killed if the caller's thread that started it (locked for the child's
// life) or the whole process dies. On failure the child is gone; a
// command that does not exist gives a *NotFoundError.
func Start(s Spec) (*Child, error) {
	if len(s.Args) == 0 {
		return nil, errors.New("sandbox: no command")
	}
	if s.Self == "" {
		s.Self = DefaultSelf
	}
	ccJSON, _ := json.Marshal(childConfig{Guest: s.Guest})
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: socketpair: %w", err)
	}
	parentSock := os.NewFile(uintptr(pair[0]), "sandbox-parent")
	childSock := os.NewFile(uintptr(pair[1]), "sandbox-child")

	cmd := exec.Command(s.Self, append([]string{"sandbox-init", "--"}, s.Args...)...)
	cmd.Env = append(os.Environ(), initEnv+"="+string(ccJSON))
	cmd.ExtraFiles = []*os.File{childSock}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s.Stdin, s.Stdout, s.Stderr
	if cmd.Stdin == nil {
		cmd.Stdin = os.Stdin
	}
	if cmd.Stdout == nil {
		cmd.Stdout = os.Stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
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
		parentSock.Close()
		return nil, startError(err, rootless)
	}
	c := &Child{cmd: cmd, sock: parentSock, exited: exited}
	m := receiveDevice(parentSock, exited)
	if m.err != nil {
		c.Kill()
		return nil, m.err
	}
	c.FD, c.Name = m.fd, m.name
	return c, nil
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

func startError(err error, rootless bool) error {
	if rootless && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EINVAL)) {
		return fmt.Errorf("sandbox: creating a user and network namespace failed (%w): rootless mode needs unprivileged user namespaces; check that sysctl user.max_user_namespaces is above 0 and kernel.unprivileged_userns_clone (where present) is 1, or run as root", err)
	}
	if errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("sandbox: creating a network namespace failed (%w): needs CAP_SYS_ADMIN, or run as a normal user to use a user namespace", err)
	}
	return fmt.Errorf("sandbox: starting the sandbox: %w", err)
}
