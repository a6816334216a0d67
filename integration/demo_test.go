//go:build linux

package integration

import (
	"bytes"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/ustacknet/ustack/tun"
)

var demoRow = regexp.MustCompile(`(?m)^\d+\s+(tcp|udp)\s+(\d+|-)\s`)

// 11. `ustack demo --tun --driver D`: the demo's table over a real TUN
// device with the kernel as the server, for each driver: ports 40000-40009
// in order and wrapping, UDP on its own, exhaustion, and the released port
// reused.
func TestDemoTUNBinary(t *testing.T) {
	bin := sharedUstack(t)
	forEachDriver(t, func(t *testing.T, drv tun.Driver) {
		// The demo makes its own namespace for the device; the process
		// itself runs in the test's, so nothing it does reaches the host's.
		ns := netnstest.New(t)
		var out bytes.Buffer
		cmd := exec.Command(bin, "demo", "--tun", "--driver", string(drv), "--range", "40000-40009")
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := ns.Do(cmd.Start); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("demo --tun --driver %s: %v\n%s", drv, err, out.String())
		}
		if want := ", " + string(drv) + " driver"; !strings.Contains(out.String(), want) {
			t.Errorf("demo header lacks %q:\n%s", want, out.String())
		}
		var got []string
		for _, m := range demoRow.FindAllStringSubmatch(out.String(), -1) {
			got = append(got, m[1]+" "+m[2])
		}
		var want []string
		for i := range 15 {
			want = append(want, "tcp "+strconv.Itoa(40000+i%10))
		}
		want = append(want, "udp 40000", "udp 40001")
		for i := range 10 {
			want = append(want, "tcp "+strconv.Itoa(40000+(5+i)%10))
		}
		want = append(want, "tcp -", "tcp 40000", "tcp 40000")
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("demo rows (-want +got):\n%s\n%s", diff, out.String())
		}
	})
}

// An unknown --driver is a usage error: exit status 2, naming the flag and
// the allowed values.
func TestUnknownDriverBinary(t *testing.T) {
	bin := sharedUstack(t)
	for _, args := range [][]string{
		{"run", "--tun", "ustk0", "--addr", "198.18.0.2/24", "--driver", "vpp"},
		{"demo", "--tun", "--driver", "vpp"},
	} {
		t.Run(args[0], func(t *testing.T) {
			out, err := exec.Command(bin, args...).CombinedOutput()
			if code := exitCodeOf(err); code != 2 {
				t.Errorf("ustack %v: exit %d (%v), want 2\n%s", args, code, err, out)
			}
			const want = `ustack: invalid argument "vpp" for "--driver" flag: want kernel or water`
			if got := strings.TrimSpace(string(out)); got != want {
				t.Errorf("ustack %v said\n%s\nwant\n%s", args, got, want)
			}
		})
	}
}
