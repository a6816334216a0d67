//go:build linux

package integration

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// contend loads the machine until the test ends: two CPU-bound processes
// for the two cores, and a loop that makes and drops network namespaces
// with links in them. The loop holds the kernel's RTNL lock again and
// again, as a busy test suite's namespace teardowns do, and IPv6 address
// set-up (duplicate address detection runs as queued work under that
// lock) waits for it. Nothing it makes sends a packet.
func contend(t *testing.T) {
	t.Helper()
	for _, script := range []string{
		"while :; do :; done",
		"while :; do :; done",
		"while :; do unshare -n sh -c 'ip link add a type veth peer name b && ip link set a up && ip link set b up'; done",
	} {
		cmd := exec.Command("sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		})
	}
}

// firstPackets is the guest's command for the readiness test: its only
// action before the pings is to read /proc/net/if_inet6, which sends
// nothing; then one echo to each gateway, with no retry.
const firstPackets = "cat /proc/net/if_inet6; echo ---; ping -c1 -W5 10.0.2.2 && ping -6 -c1 -W5 fd00::2"

// checkFirstPackets fails unless out (firstPackets' output) shows no
// tentative IPv6 address and both echoes answered.
func checkFirstPackets(t *testing.T, what string, code int, out string) {
	t.Helper()
	addrs, _, _ := strings.Cut(out, "---")
	for _, line := range strings.Split(addrs, "\n") {
		f := strings.Fields(line)
		if len(f) != 6 {
			continue
		}
		flags, err := strconv.ParseUint(f[4], 16, 32)
		if err != nil {
			continue
		}
		if flags&syscall.IFA_F_TENTATIVE != 0 {
			t.Errorf("%s: the command started while %s on %s was tentative (flags %#x)\n%s", what, f[0], f[5], flags, out)
		}
	}
	if code != 0 || strings.Count(out, "1 received") != 2 {
		t.Fatalf("%s: the first echo to a gateway was lost: exit %d\n%s", what, code, out)
	}
}

// The sandbox's network is ready before its command runs: started back to
// back on a loaded machine, every sandbox's command finds no tentative
// address and gets its very first IPv4 and IPv6 packets answered, in
// every mode: `sandbox -- CMD`, `sandbox --netns` and `slirp4netns`
// (whose commands start after --ready-fd).
func TestSandboxReadyFirstPacket(t *testing.T) {
	r := newSandboxRun(t)
	if _, err := exec.LookPath("ping"); err != nil {
		t.Fatalf("ping is needed (scripts/test.sh installs iputils-ping): %v", err)
	}
	contend(t)

	const runs, attaches = 20, 6
	for i := range runs {
		code, out := r.run(nil, "sh", "-c", firstPackets)
		checkFirstPackets(t, fmt.Sprintf("sandbox -- CMD, run %d", i), code, out)
	}

	inGuest := func(nsPath string) (int, string) {
		cmd := exec.Command("sh", "-c", firstPackets)
		var err error
		var b []byte
		inNS(t, nsPath, func() error {
			b, err = cmd.CombinedOutput()
			return nil
		})
		return exitCodeOf(err), string(b)
	}
	for i := range attaches {
		pid := r.nsHolder(nil)
		nsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
		exitW, _, _ := r.startAttach(nil, "--netns", nsPath)
		code, out := inGuest(nsPath)
		exitW.Close()
		checkFirstPackets(t, fmt.Sprintf("sandbox --netns, run %d", i), code, out)
	}
	for i := range attaches {
		pid := r.nsHolder(nil)
		nsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
		exitW, _, _ := r.startWithFDs(nil, r.bin, []string{"slirp4netns", "-c", "--enable-ipv6", "-r", "3", "-e", "4", "--netns-type=path", nsPath, "tap0"})
		code, out := inGuest(nsPath)
		exitW.Close()
		checkFirstPackets(t, fmt.Sprintf("slirp4netns, run %d", i), code, out)
	}
}
