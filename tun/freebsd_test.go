package tun

import (
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The FreeBSD driver's pure parts, run wherever the tests run: ioctl
// numbers, the address family header, names, Config checks and the
// commands. device_freebsd.go itself is compiled (GOOS=freebsd go vet,
// scripts/crossbuild.sh) but runs only on FreeBSD.

func TestBSDIOC(t *testing.T) {
	tests := []struct {
		name string
		got  uint32
		want uint32
	}{
		// The encoder against numbers golang.org/x/sys/unix lists for
		// FreeBSD (zerrors_freebsd_amd64.go), which come from the C
		// headers: _IOW('i', 121, struct ifreq) and so on.
		{"SIOCIFDESTROY", bsdIOC(bsdIOCIn, 'i', 121, bsdIfreq), 0x80206979},
		{"SIOCIFCREATE", bsdIOC(bsdIOCIn|bsdIOCOut, 'i', 122, bsdIfreq), 0xc020697a},
		{"SIOCSIFNAME", bsdIOC(bsdIOCIn, 'i', 40, bsdIfreq), 0x80206928},
		{"SIOCGIFMTU", bsdIOC(bsdIOCIn|bsdIOCOut, 'i', 51, bsdIfreq), 0xc0206933},
		// tun(4)'s, as sys/net/if_tun.h defines them.
		{"TUNSIFHEAD", tunSIFHEAD, 0x80047460},
		{"TUNSIFMODE", tunSIFMODE, 0x8004745e},
		{"TUNGIFNAME", tunGIFNAME, 0x4020745d},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("%s = %#x, want %#x", tt.name, tt.got, tt.want)
			}
		})
	}
}

func TestAFHeader(t *testing.T) {
	v4 := rawBytes("198.18.0.1:1000", "198.18.0.2:80", 1)
	v6 := rawBytes("[fd00::1]:1000", "[fd00::2]:80", 1)
	tests := []struct {
		name      string
		pkt       []byte
		want      [afHeaderLen]byte
		wantProto tcpip.NetworkProtocolNumber
		wantErr   string
	}{
		{name: "IPv4", pkt: v4, want: [4]byte{0, 0, 0, 2}, wantProto: header.IPv4ProtocolNumber},
		{name: "IPv6", pkt: v6, want: [4]byte{0, 0, 0, 28}, wantProto: header.IPv6ProtocolNumber},
		{name: "empty", pkt: nil, wantErr: "tun: cannot write an empty packet to a FreeBSD tun device"},
		{name: "version 5", pkt: []byte{0x50, 0, 0, 0}, wantErr: "tun: cannot write a packet of IP version 5 to a FreeBSD tun device: want 4 or 6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := afHeader(tt.pkt)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("afHeader error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			proto, err := parseAFHeader(got[:])
			if err != nil || proto != tt.wantProto {
				t.Errorf("parseAFHeader(%v) = %v, %v; want %v", got, proto, err, tt.wantProto)
			}
		})
	}
}

// rawBytes is rawPacket's bytes.
func rawBytes(src, dst string, payload byte) []byte {
	pkt := rawPacket(netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst), 0, payload)
	defer pkt.DecRef()
	return packetBytes(pkt)
}

func TestParseAFHeaderErrors(t *testing.T) {
	tests := []struct {
		name string
		h    []byte
		want string
	}{
		{"short", []byte{0, 0, 2}, "tun: packet header of 3 bytes from a FreeBSD tun device: want 4"},
		{"Linux AF_INET6", []byte{0, 0, 0, 10}, "tun: packet of address family 10 from a FreeBSD tun device: want AF_INET (2) or AF_INET6 (28)"},
		{"little-endian AF_INET", []byte{2, 0, 0, 0}, "tun: packet of address family 33554432 from a FreeBSD tun device: want AF_INET (2) or AF_INET6 (28)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseAFHeader(tt.h); err == nil || err.Error() != tt.want {
				t.Errorf("parseAFHeader(%v) error = %v, want %q", tt.h, err, tt.want)
			}
		})
	}
}

func TestFreeBSDDevice(t *testing.T) {
	badUnit := `tun: invalid Config.Name %q with Config.Driver "freebsd": a tun unit is a number 0..32767 without leading zeros`
	badPct := `tun: invalid Config.Name %q with Config.Driver "freebsd": FreeBSD numbers tun devices itself, so "%%d" is allowed only in "tun%%d"; use "tun%%d" or empty for the next free tunN, tunN for that unit, or a name without "%%d" to rename the new device to`
	tests := []struct {
		name, path, rename, wantErr string
	}{
		{name: "", path: "/dev/tun"},
		{name: "tun%d", path: "/dev/tun"},
		{name: "tun0", path: "/dev/tun0"},
		{name: "tun32767", path: "/dev/tun32767"},
		{name: "ustack0", path: "/dev/tun", rename: "ustack0"},
		{name: "tunnel", path: "/dev/tun", rename: "tunnel"},
		{name: "tun", path: "/dev/tun", rename: "tun"},
		{name: "tun32768", wantErr: fmt.Sprintf(badUnit, "tun32768")},
		{name: "tun07", wantErr: fmt.Sprintf(badUnit, "tun07")},
		{name: "ustack%d", wantErr: fmt.Sprintf(badPct, "ustack%d")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, rename, err := freebsdDevice(tt.name)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("freebsdDevice(%q) error = %v, want %q", tt.name, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([2]string{tt.path, tt.rename}, [2]string{path, rename}); diff != "" {
				t.Errorf("freebsdDevice(%q) path, rename (-want +got):\n%s", tt.name, diff)
			}
		})
	}
}

func TestDriversOn(t *testing.T) {
	want := map[string][]Driver{
		"linux":   {DriverKernel, DriverWater},
		"freebsd": {DriverFreeBSD},
		"darwin":  {DriverWater},
		"windows": {DriverWater},
	}
	for goos, w := range want {
		if diff := cmp.Diff(w, driversOn(goos)); diff != "" {
			t.Errorf("driversOn(%s) (-want +got):\n%s", goos, diff)
		}
	}
}

// TestConfigCheckFreeBSD checks the Config rules of FreeBSD and of
// DriverFreeBSD elsewhere.
func TestConfigCheckFreeBSD(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name    string
		goos    string
		cfg     Config
		wantErr string
		mtu     int // the default filled in, without an error
	}{
		{name: "zero value", goos: "freebsd", cfg: Config{}, mtu: 1500},
		{name: "explicit driver", goos: "freebsd", cfg: Config{Driver: DriverFreeBSD, Name: "tun3", MTU: 9000}, mtu: 9000},
		{name: "mtu max", goos: "freebsd", cfg: Config{MTU: 16384}, mtu: 16384},
		{name: "mtu min", goos: "freebsd", cfg: Config{MTU: 68}, mtu: 68},
		{name: "mtu too big", goos: "freebsd", cfg: Config{MTU: 16385}, wantErr: `tun: invalid Config.MTU 16385 with Config.Driver "freebsd": want 0 (for 1500) or 68..16384 (older tun(4) refuses longer packets)`},
		{name: "mtu too small", goos: "freebsd", cfg: Config{MTU: 67}, wantErr: `tun: invalid Config.MTU 67 with Config.Driver "freebsd": want 0 (for 1500) or 68..16384 (older tun(4) refuses longer packets)`},
		{name: "addresses and routes", goos: "freebsd", cfg: Config{Addrs: []netip.Prefix{p("198.18.0.1/24"), p("fd00::1/64")}, Up: true, Routes: []netip.Prefix{p("198.18.4.0/24")}}, mtu: 1500},
		{name: "multiqueue", goos: "freebsd", cfg: Config{MultiQueue: true}, wantErr: `tun: Config.MultiQueue is not supported with Config.Driver "freebsd", which opens one queue: use Config.Driver "kernel" (Linux) for several`},
		{name: "offloads required", goos: "freebsd", cfg: Config{RequireOffload: true}, wantErr: `tun: Config.RequireOffload is not supported with Config.Driver "freebsd", which cannot set IFF_VNET_HDR: use Config.Driver "kernel" (Linux) for the offloads`},
		{name: "no offloads", goos: "freebsd", cfg: Config{NoOffload: true}, mtu: 1500},
		{name: "network namespace", goos: "freebsd", cfg: Config{NetNS: os.Stdin}, wantErr: "tun: Config.NetNS is Linux-only"},
		{name: "txqueuelen", goos: "freebsd", cfg: Config{TxQueueLen: 1000}, wantErr: `tun: Config.TxQueueLen is not supported with Config.Driver "freebsd": FreeBSD sets the length of every interface's queue at boot (the loader tunable net.link.ifqmaxlen); leave it 0`},
		{name: "name pattern", goos: "freebsd", cfg: Config{Name: "u%d"}, wantErr: `tun: invalid Config.Name "u%d" with Config.Driver "freebsd": FreeBSD numbers tun devices itself, so "%d" is allowed only in "tun%d"; use "tun%d" or empty for the next free tunN, tunN for that unit, or a name without "%d" to rename the new device to`},
		{name: "name too long", goos: "freebsd", cfg: Config{Name: "abcdefghijklmnop"}, wantErr: `tun: invalid Config.Name "abcdefghijklmnop": longer than 15 bytes`},
		{name: "water on freebsd", goos: "freebsd", cfg: Config{Driver: DriverWater}, wantErr: `tun: invalid Config.Driver "water": songgao/water has no freebsd support; use freebsd`},
		{name: "kernel on freebsd", goos: "freebsd", cfg: Config{Driver: DriverKernel}, wantErr: `tun: invalid Config.Driver "kernel": it is Linux-only; on freebsd use freebsd`},
		{name: "unknown on freebsd", goos: "freebsd", cfg: Config{Driver: "vpp"}, wantErr: `tun: invalid Config.Driver "vpp": want freebsd, or empty for the default`},
		{name: "freebsd on linux", goos: "linux", cfg: Config{Driver: DriverFreeBSD}, wantErr: `tun: invalid Config.Driver "freebsd": it is FreeBSD-only; on linux use kernel or water`},
		{name: "freebsd on darwin", goos: "darwin", cfg: Config{Driver: DriverFreeBSD}, wantErr: `tun: invalid Config.Driver "freebsd": it is FreeBSD-only; on darwin use water`},
		{name: "water on darwin", goos: "darwin", cfg: Config{Driver: DriverWater, NetNS: os.Stdin}, wantErr: "tun: Config.NetNS is Linux-only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.checkOn(tt.goos)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("checkOn(%s) error = %v, want %q", tt.goos, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("checkOn(%s): %v", tt.goos, err)
			}
			if got.driver != DriverFreeBSD || got.MTU != tt.mtu || got.Queues != 1 {
				t.Errorf("checkOn(%s) = driver %q, MTU %d, %d queues; want %q, %d, 1", tt.goos, got.driver, got.MTU, got.Queues, DriverFreeBSD, tt.mtu)
			}
		})
	}
}

func TestFreeBSDCommands(t *testing.T) {
	p := netip.MustParsePrefix
	check := func(c Config) checked {
		t.Helper()
		k, err := c.checkOn("freebsd")
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	tests := []struct {
		name string
		dev  string
		cfg  Config
		want [][]string
	}{{
		name: "addresses, up, routes",
		dev:  "tun3",
		cfg: Config{
			MTU:    1400,
			Addrs:  []netip.Prefix{p("198.18.0.1/24"), p("fd00::1/64"), p("198.18.1.1/24"), p("fd00:1::1/64")},
			Up:     true,
			Routes: []netip.Prefix{p("198.18.4.0/24"), p("fd00:4::/64")},
		},
		want: [][]string{
			{"ifconfig", "tun3", "mtu", "1400"},
			{"ifconfig", "tun3", "inet", "198.18.0.1/24", "alias"},
			{"ifconfig", "tun3", "inet6", "-ifdisabled", "no_dad"},
			{"ifconfig", "tun3", "inet6", "fd00::1/64", "alias"},
			{"ifconfig", "tun3", "inet", "198.18.1.1/24", "alias"},
			{"ifconfig", "tun3", "inet6", "fd00:1::1/64", "alias"},
			{"ifconfig", "tun3", "up"},
			{"route", "-q", "-n", "add", "-inet", "198.18.4.0/24", "-interface", "tun3"},
			{"route", "-q", "-n", "add", "-inet6", "fd00:4::/64", "-interface", "tun3"},
		},
	}, {
		name: "renamed",
		dev:  "tun0",
		cfg:  Config{Name: "ustack0", Addrs: []netip.Prefix{p("198.18.0.1/24")}, Up: true},
		want: [][]string{
			{"ifconfig", "tun0", "name", "ustack0"},
			{"ifconfig", "ustack0", "mtu", "1500"},
			{"ifconfig", "ustack0", "inet", "198.18.0.1/24", "alias"},
			{"ifconfig", "ustack0", "up"},
		},
	}, {
		// tun(4) sets the interface up with its first address.
		name: "addresses while down",
		dev:  "tun1",
		cfg:  Config{Name: "tun1", Addrs: []netip.Prefix{p("fd00::1/64")}},
		want: [][]string{
			{"ifconfig", "tun1", "mtu", "1500"},
			{"ifconfig", "tun1", "inet6", "-ifdisabled", "no_dad"},
			{"ifconfig", "tun1", "inet6", "fd00::1/64", "alias"},
			{"ifconfig", "tun1", "down"},
		},
	}, {
		name: "zero value",
		dev:  "tun0",
		want: [][]string{{"ifconfig", "tun0", "mtu", "1500"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, freebsdCommands(tt.dev, check(tt.cfg))); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
		})
	}
	if diff := cmp.Diff([]string{"ifconfig", "ustack0", "destroy"}, freebsdDestroyCommand("ustack0")); diff != "" {
		t.Errorf("destroy command (-want +got):\n%s", diff)
	}
}
