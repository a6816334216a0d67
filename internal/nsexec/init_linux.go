package nsexec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/ustacknet/ustack/tun"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// initEnv carries the child's settings from Start or OpenDevice to Init.
const initEnv = "USTACK_SANDBOX_INIT"

// childConfig is what the child needs to set up its side.
type childConfig struct {
	// Attach: only make and send the device (OpenDevice's helper), no
	// command.
	Attach bool `json:"attach,omitempty"`
	Guest
}

// IsInit reports whether this process was started by Start or
// OpenDevice as a namespace child; its main function must then call Init
// before anything else.
func IsInit() bool { return os.Getenv(initEnv) != "" }

// Init is the child's side of Start: inside the new namespaces it brings
// up lo, makes and configures the guest's device, sends it to the parent
// over descriptor 3, waits for the parent's go-ahead and then runs args,
// as PID 1 of its PID namespace (initLoop) or in its place (exec). For
// OpenDevice's helper it makes the device, sends it and returns 0. It
// returns the exit code to use; on failure the parent has the reason.
func Init(args []string) int {
	sock := os.NewFile(3, "sandbox-sock")
	fail := func(format string, a ...any) int {
		sendFail(sock, msgError, fmt.Sprintf(format, a...))
		return 127
	}
	var cc childConfig
	if err := json.Unmarshal([]byte(os.Getenv(initEnv)), &cc); err != nil {
		return fail("sandbox: bad settings from the parent: %v", err)
	}
	os.Unsetenv(initEnv)
	if cc.Attach {
		return initAttach(sock, cc.Guest)
	}
	if len(args) == 0 {
		return fail("sandbox: no command")
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		sendFail(sock, msgNotFound, fmt.Sprintf("sandbox: command %q: %v", args[0], err))
		return 127
	}
	// Addresses are usable at once: no duplicate address detection on a
	// link that has nobody else on it.
	for _, f := range []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"} {
		os.WriteFile(f, []byte("0"), 0)
	}
	g := cc.Guest
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fail("sandbox: netlink: %v", err)
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		h.LinkSetUp(lo)
	}
	dev, err := tun.Open(tun.Config{Name: g.IfName, MTU: g.MTU, TxQueueLen: g.TxQueueLen, Addrs: g.Addrs, Up: true})
	if err != nil {
		if errors.Is(err, os.ErrPermission) && os.Getuid() == 0 && isUserNS() {
			return fail("sandbox: rootless mode needs /dev/net/tun to be usable by your user (the usual mode is 0666; here it is %s): %v", tunMode(), err)
		}
		return fail("sandbox: creating the sandbox's interface: %v", err)
	}
	noSLAAC(dev.Name(), g.Addrs)
	if err := addDefaultRoutes(h, dev.Name(), g.Gateways); err != nil {
		return fail("%v", err)
	}
	h.Close()
	f, err := dev.DupFile()
	if err != nil {
		return fail("sandbox: %v", err)
	}
	if err := sendDevice(sock, f, dev.Name(), 0); err != nil {
		return fail("sandbox: sending the interface: %v", err)
	}
	f.Close()
	// The parent owns the device now; the child's descriptors close on
	// exec. Wait for the go-ahead.
	b := make([]byte, 1)
	if n, _ := sock.Read(b); n != 1 || b[0] != msgGo {
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

// initAttach is OpenDevice's helper, run by nsenter inside the target's
// user and network namespaces: it makes the device, sends it and exits.
func initAttach(sock *os.File, g Guest) int {
	fail := func(format string, a ...any) int {
		sendFail(sock, msgError, fmt.Sprintf(format, a...))
		return 1
	}
	// Inside the target's namespaces already (nsenter put this process
	// there).
	dev, err := makeDevice(nil, g)
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
	if err := sendDevice(sock, f, dev.Name(), dev.MTU()); err != nil {
		return fail("sandbox: sending the interface: %v", err)
	}
	return 0
}
