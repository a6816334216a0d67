//go:build linux

package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/conformance"
	"github.com/ustacknet/ustack/internal/privtest"
)

// envLong runs TestConformance's real-scale variants: 3-minute zero
// windows, 1 GiB each way with loss, and the scenarios that only make
// sense at real scale (guest-vanishes waits for the relay's 60 s FIN
// timeout).
const envLong = "USTACK_LONG"

// maxStalledRSS bounds ustack's peak RSS (KiB) with the stalled-flows
// scenario's 256 stalled flows: twice pasta's 30 MiB as measured on
// these machines (bench/conformance.sh measures both in one run).
const maxStalledRSS = 64 << 10

// TestConformance runs internal/conformance's scenarios with the kernel
// as the guest inside `ustack sandbox --allow-host-loopback`, against a
// peer on the run namespace's loopback (10.0.2.2 in the guest), each in
// a sandbox of its own.
func TestConformance(t *testing.T) {
	long := os.Getenv(envLong) == "1"
	privtest.Require(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft is needed (scripts/test.sh installs nftables): %v", err)
	}
	for _, s := range conformance.All() {
		t.Run(s.Name, func(t *testing.T) {
			if s.LongOnly && !long {
				t.Skipf("runs only at real scale: %s=1", envLong)
			}
			p := s.Params
			if long {
				p = s.Long
			}
			if p.Hold > 0 {
				// Mostly idle: the zero windows overlap.
				t.Parallel()
			}
			r := newSandboxRun(t)
			l, err := r.ns.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var pid atomic.Int64
			var peakKiB atomic.Int64
			srv := conformance.Serve(l, conformance.Config{
				Listen:       r.ns.Listen,
				ListenPacket: r.ns.ListenPacket,
				Event: func(_, event string) {
					if event == "stalled" {
						peakKiB.Store(int64(hwmKiB(int(pid.Load()))))
					}
				},
			})
			t.Cleanup(func() { srv.Close() })
			arg := fmt.Sprintf("%s,10.0.2.2:%d,%v", s.Name, l.Addr().(*net.TCPAddr).Port, long)
			cmd, out, done := r.start([]string{"--allow-host-loopback"}, guest("conform", arg)...)
			pid.Store(int64(cmd.Process.Pid))
			bound := p.Hold + p.Limit + 2*time.Minute
			select {
			case err := <-done:
				done <- err
			case <-time.After(bound):
				t.Fatalf("the guest did not finish in %v\n%s", bound, out)
			}
			line := ""
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.HasPrefix(l, "RESULT ") {
					line = l
				}
			}
			if !strings.HasPrefix(line, "RESULT "+s.Name+" PASS") {
				t.Fatalf("%s\n\n%s\nsandbox output:\n%s", s.Doc, line, out)
			}
			t.Log(line)
			if s.Name == "stalled-flows" {
				kib := peakKiB.Load()
				t.Logf("ustack's peak RSS with %d stalled flows: %d MiB", p.Count, kib>>10)
				if kib == 0 || kib > maxStalledRSS {
					t.Errorf("peak RSS %d KiB with %d stalled flows; want at most %d KiB", kib, p.Count, maxStalledRSS)
				}
			}
		})
	}
}

// hwmKiB returns a process's peak resident set size (VmHWM), or 0.
func hwmKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			var n int
			fmt.Sscan(f[1], &n)
			return n
		}
	}
	return 0
}
