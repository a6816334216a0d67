package tun

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestConfigCommands(t *testing.T) {
	p := netip.MustParsePrefix
	c, err := Config{
		Driver: DriverWater,
		MTU:    1400,
		Addrs:  []netip.Prefix{p("198.18.0.1/24"), p("fd00::1/64")},
		Up:     true,
		Routes: []netip.Prefix{p("198.18.4.0/24"), p("fd00:4::/64")},
	}.checkOn("darwin")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  [][]string
		want [][]string
	}{{
		name: "darwin",
		got:  darwinCommands("utun7", c),
		want: [][]string{
			{"ifconfig", "utun7", "mtu", "1400"},
			{"ifconfig", "utun7", "inet", "198.18.0.1/24", "198.18.0.1", "alias"},
			{"route", "-q", "-n", "add", "-inet", "198.18.0.0/24", "-interface", "utun7"},
			{"ifconfig", "utun7", "inet6", "fd00::1/64", "alias"},
			{"ifconfig", "utun7", "up"},
			{"route", "-q", "-n", "add", "-inet", "198.18.4.0/24", "-interface", "utun7"},
			{"route", "-q", "-n", "add", "-inet6", "fd00:4::/64", "-interface", "utun7"},
		},
	}, {
		name: "windows",
		got:  windowsCommands("OpenVPN TAP 2", c),
		want: [][]string{
			{"netsh", "interface", "ipv4", "set", "subinterface", "OpenVPN TAP 2", "mtu=1400", "store=active"},
			{"netsh", "interface", "ipv6", "set", "subinterface", "OpenVPN TAP 2", "mtu=1400", "store=active"},
			{"netsh", "interface", "ipv4", "add", "address", "name=OpenVPN TAP 2", "address=198.18.0.1", "mask=255.255.255.0", "store=active"},
			{"netsh", "interface", "ipv6", "add", "address", "interface=OpenVPN TAP 2", "address=fd00::1/64", "store=active"},
			{"netsh", "interface", "ipv4", "add", "route", "prefix=198.18.4.0/24", "interface=OpenVPN TAP 2", "store=active"},
			{"netsh", "interface", "ipv6", "add", "route", "prefix=fd00:4::/64", "interface=OpenVPN TAP 2", "store=active"},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.got); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRunCommands checks that arguments reach the program as they are,
// with no shell to interpret them, and that a failure names the command
// and carries its output.
func TestRunCommands(t *testing.T) {
	for _, prog := range []string{"sh", "false"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("no %s here: %v", prog, err)
		}
	}
	// If a shell interpreted the arguments, "; exit 3" would end it with
	// status 3, and $(...) would run. Here sh gets them as $1 and $2 and
	// prints them back on stderr, then fails with status 1.
	err := runCommands("utun9", [][]string{
		{"sh", "-c", `printf '%s|%s' "$1" "$2" >&2; exit 1`, "sh", "a; exit 3", "$(echo pwned)"},
	})
	if err == nil {
		t.Fatal("a failing command reported no error")
	}
	const want = `tun: configure "utun9": sh -c "printf '%s|%s' \"$1\" \"$2\" >&2; exit 1" sh "a; exit 3" "$(echo pwned)": exit status 1: a; exit 3|$(echo pwned)`
	if err.Error() != want {
		t.Errorf("error\n got %s\nwant %s", err, want)
	}
	if err := runCommands("utun9", [][]string{{"sh", "-c", "exit 0"}, {"false"}, {"sh", "-c", "never run"}}); err == nil || !strings.Contains(err.Error(), ": false: exit status 1") {
		t.Errorf("second of three commands failing: %v", err)
	}
}
