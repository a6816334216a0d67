package seccomp

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Denied lists the system calls the filter refuses, by name, for
// documentation and tests.
var Denied = map[string]uintptr{
	"execve":            unix.SYS_EXECVE,
	"execveat":          unix.SYS_EXECVEAT,
	"ptrace":            unix.SYS_PTRACE,
	"process_vm_readv":  unix.SYS_PROCESS_VM_READV,
	"process_vm_writev": unix.SYS_PROCESS_VM_WRITEV,
	"setns":             unix.SYS_SETNS,
	"unshare":           unix.SYS_UNSHARE,
	"mount":             unix.SYS_MOUNT,
	"umount2":           unix.SYS_UMOUNT2,
	"pivot_root":        unix.SYS_PIVOT_ROOT,
	"chroot":            unix.SYS_CHROOT,
	"open_tree":         unix.SYS_OPEN_TREE,
	"move_mount":        unix.SYS_MOVE_MOUNT,
	"fsopen":            unix.SYS_FSOPEN,
	"fsmount":           unix.SYS_FSMOUNT,
	"init_module":       unix.SYS_INIT_MODULE,
	"finit_module":      unix.SYS_FINIT_MODULE,
	"delete_module":     unix.SYS_DELETE_MODULE,
	"kexec_load":        unix.SYS_KEXEC_LOAD,
	"kexec_file_load":   unix.SYS_KEXEC_FILE_LOAD,
	"bpf":               unix.SYS_BPF,
	"perf_event_open":   unix.SYS_PERF_EVENT_OPEN,
	"keyctl":            unix.SYS_KEYCTL,
	"add_key":           unix.SYS_ADD_KEY,
	"request_key":       unix.SYS_REQUEST_KEY,
	"personality":       unix.SYS_PERSONALITY,
	"reboot":            unix.SYS_REBOOT,
	"swapon":            unix.SYS_SWAPON,
	"swapoff":           unix.SYS_SWAPOFF,
	"userfaultfd":       unix.SYS_USERFAULTFD,
	"pidfd_getfd":       unix.SYS_PIDFD_GETFD,
}

// Offsets in struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
)

// x32SyscallBit marks x32 system call numbers on x86-64.
const x32SyscallBit = 0x40000000

// program builds the filter for the native architecture arch.
func program(arch uint32) ([]bpf.RawInstruction, error) {
	deny := uint32(unix.SECCOMP_RET_ERRNO | (uint32(unix.EPERM) & unix.SECCOMP_RET_DATA))
	allow := uint32(unix.SECCOMP_RET_ALLOW)
	n := len(Denied)
	// Layout: [0] load arch, [1] arch != native → deny, [2] load nr,
	// [3] nr >= x32 bit → deny, [4..4+n) nr == X → deny, [4+n] allow,
	// [5+n] deny.
	insns := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: arch, SkipTrue: uint8(n + 3)},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32SyscallBit, SkipTrue: uint8(n + 1)},
	}
	i := 0
	for _, nr := range Denied {
		// From instruction 4+i, the deny return is at 5+n: skip n-i.
		insns = append(insns, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(nr), SkipTrue: uint8(n - i)})
		i++
	}
	insns = append(insns, bpf.RetConstant{Val: allow}, bpf.RetConstant{Val: deny})
	return bpf.Assemble(insns)
}

// Install puts the filter on every thread of the process, for good
// (children inherit it). It sets no_new_privs, which the kernel requires
// of a filter installed without CAP_SYS_ADMIN.
func Install() error {
	arch, ok := nativeArch()
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnsupported, runtime.GOARCH)
	}
	raw, err := program(arch)
	if err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	filters := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filters[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filters)), Filter: &filters[0]}
	// no_new_privs on this thread; TSYNC gives it, and the filter, to the
	// others.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: no_new_privs: %w", err)
	}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(filters)
	if errno != 0 {
		if errno == unix.EINVAL || errno == unix.ENOSYS {
			return fmt.Errorf("seccomp: the kernel does not support filters with thread sync: %w", errno)
		}
		return fmt.Errorf("seccomp: %w", errno)
	}
	return nil
}

// ErrUnsupported is returned by Install on architectures it has no audit
// number for.
var ErrUnsupported = errors.New("seccomp: architecture not supported")

func nativeArch() (uint32, bool) {
	switch runtime.GOARCH {
	case "amd64":
		return unix.AUDIT_ARCH_X86_64, true
	case "arm64":
		return unix.AUDIT_ARCH_AARCH64, true
	}
	return 0, false
}
