//go:build linux

package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/portalloc"
)

// buildUstack builds the ustack binary into a temporary directory.
func buildUstack(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ustack")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/ustack").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// 10. The binary: `ustack run` serves curl from the kernel side on its
// --http port, and `ustack ports` reads its state through the API.
func TestRunBinary(t *testing.T) {
	ns := netnstest.New(t)
	bin := buildUstack(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl is needed (scripts/test.sh installs it): %v", err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	var out bytes.Buffer
	cmd := exec.Command(bin, "run", "--tun", "ustk0", "--addr", "198.18.0.2/24", "--peer-addr", "198.18.0.1/24",
		"--tcp-range", "40000-40009", "--udp-range", "linux", "--policy", "sequential",
		"--http", "80", "--echo", "7", "--api", sock, "--log-level", "debug",
		// The namespace's own loopback: nothing else listens there.
		"--metrics", "127.0.0.1:19109")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// The process starts on a thread inside the namespace, so it lives
	// there, with its TUN device.
	if err := ns.Do(cmd.Start); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	// ustack run has no readiness descriptor: watch for its socket.
	testnet.WaitFor(t, 20*time.Second, "the API socket", func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("ustack run exited early: %v\n%s", err, out.String())
		default:
		}
		_, err := os.Stat(sock)
		return err
	})
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("API socket mode: %v %v, want 0600", fi.Mode(), err)
	}

	var page []byte
	err := ns.Do(func() error {
		var err error
		page, err = exec.Command("curl", "-sS", "--max-time", "10", "http://198.18.0.2/").CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, page)
	}
	for _, want := range []string{"ustack port allocator", "<td>tcp</td><td>40000-40009</td><td>sequential</td>", "<td>udp</td><td>32768-60999</td>"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}

	table, err := exec.Command(bin, "ports", "--api", sock).CombinedOutput()
	if err != nil {
		t.Fatalf("ustack ports: %v\n%s", err, table)
	}
	if !strings.Contains(string(table), "tcp    40000-40009  sequential  40000") || !strings.Contains(string(table), "udp    32768-60999") {
		t.Errorf("ustack ports table:\n%s", table)
	}
	js, err := exec.Command(bin, "ports", "--api", sock, "--json").Output()
	if err != nil {
		t.Fatalf("ustack ports --json: %v", err)
	}
	var snaps []portalloc.Snapshot
	if err := json.Unmarshal(js, &snaps); err != nil || len(snaps) != len(portalloc.Protocols) || snaps[0].Range != (portalloc.Range{First: 40000, Last: 40009}) {
		t.Fatalf("ustack ports --json: %v %+v\n%s", err, snaps, js)
	}

	// Prometheus metrics, over TCP (--metrics) and on the API socket.
	for _, args := range [][]string{
		{"http://127.0.0.1:19109/metrics"},
		{"--unix-socket", sock, "http://ustack/metrics"},
	} {
		var text []byte
		err := ns.Do(func() error {
			var err error
			text, err = exec.Command("curl", append([]string{"-sS", "--fail", "--max-time", "10"}, args...)...).CombinedOutput()
			return err
		})
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, text)
		}
		for _, want := range []string{
			`ustack_ports_info{policy="sequential",protocol="tcp",range="40000-40009"} 1`,
			`ustack_ports_range_size{protocol="udp"} 28232`,
			`ustack_tcp_passive_opens_total 1`, // the curl of the page above
			`ustack_tun_checksum_errors_total 0`,
			`go_goroutines `,
		} {
			if !strings.Contains(string(text), want) {
				t.Errorf("curl %v: metrics lack %q:\n%.3000s", args, want, text)
			}
		}
	}

	// Shut down with SIGTERM: exit 0, device and socket gone.
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("ustack run after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("ustack run did not exit 10s after SIGTERM\n%s", out.String())
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("API socket left behind: %v", err)
	}
	if _, err := ns.Handle().LinkByName("ustk0"); err == nil {
		t.Errorf("TUN device ustk0 left behind")
	}
}
