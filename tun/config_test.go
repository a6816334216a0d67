package tun

import (
	"net/netip"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestConfigCheck(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
		// what the defaults become, when there is no error
		mtu, queues int
	}{
		{name: "zero value", cfg: Config{}, mtu: 1500, queues: 1},
		{name: "mtu min", cfg: Config{MTU: 68}, mtu: 68, queues: 1},
		{name: "mtu max", cfg: Config{MTU: 65535}, mtu: 65535, queues: 1},
		{name: "mtu too small", cfg: Config{MTU: 67}, wantErr: "tun: invalid Config.MTU 67: want 0 (for 1500) or 68..65535"},
		{name: "mtu too big", cfg: Config{MTU: 65536}, wantErr: "tun: invalid Config.MTU 65536: want 0 (for 1500) or 68..65535"},
		{name: "mtu negative", cfg: Config{MTU: -1}, wantErr: "tun: invalid Config.MTU -1: want 0 (for 1500) or 68..65535"},
		{name: "multiqueue default", cfg: Config{MultiQueue: true}, mtu: 1500, queues: min(runtime.GOMAXPROCS(0), MaxQueues)},
		{name: "multiqueue 256", cfg: Config{MultiQueue: true, Queues: 256}, mtu: 1500, queues: 256},
		{name: "multiqueue 257", cfg: Config{MultiQueue: true, Queues: 257}, wantErr: "tun: invalid Config.Queues 257: want 0 (for GOMAXPROCS) or 1..256"},
		{name: "queues negative", cfg: Config{MultiQueue: true, Queues: -1}, wantErr: "tun: invalid Config.Queues -1: want 0 (for GOMAXPROCS) or 1..256"},
		{name: "one queue without multiqueue", cfg: Config{Queues: 1}, mtu: 1500, queues: 1},
		{name: "queues without multiqueue", cfg: Config{Queues: 2}, wantErr: "tun: invalid Config.Queues 2: more than one queue needs Config.MultiQueue"},
		{name: "txqueuelen max", cfg: Config{TxQueueLen: MaxTxQueueLen}, mtu: 1500, queues: 1},
		{name: "txqueuelen 1", cfg: Config{TxQueueLen: 1}, mtu: 1500, queues: 1},
		{name: "txqueuelen too big", cfg: Config{TxQueueLen: MaxTxQueueLen + 1}, wantErr: "tun: invalid Config.TxQueueLen 65537: want 0 (the kernel's default) or 1..65536 packets"},
		{name: "txqueuelen negative", cfg: Config{TxQueueLen: -1}, wantErr: "tun: invalid Config.TxQueueLen -1: want 0 (the kernel's default) or 1..65536 packets"},
		{name: "name 15 bytes", cfg: Config{Name: "abcdefghijklmno"}, mtu: 1500, queues: 1},
		{name: "name 16 bytes", cfg: Config{Name: "abcdefghijklmnop"}, wantErr: `tun: invalid Config.Name "abcdefghijklmnop": longer than 15 bytes`},
		{name: "name with %d", cfg: Config{Name: "ustk%d"}, mtu: 1500, queues: 1},
		{name: "name with %s", cfg: Config{Name: "ustk%s"}, wantErr: `tun: invalid Config.Name "ustk%s": '%' is allowed only once, as "%d"`},
		{name: "name with two %d", cfg: Config{Name: "u%dx%d"}, wantErr: `tun: invalid Config.Name "u%dx%d": '%' is allowed only once, as "%d"`},
		{name: "name with slash", cfg: Config{Name: "a/b"}, wantErr: `tun: invalid Config.Name "a/b": contains '/', ':' or white space`},
		{name: "name with colon", cfg: Config{Name: "a:b"}, wantErr: `tun: invalid Config.Name "a:b": contains '/', ':' or white space`},
		{name: "name with space", cfg: Config{Name: "a b"}, wantErr: `tun: invalid Config.Name "a b": contains '/', ':' or white space`},
		{name: "name dot", cfg: Config{Name: ".."}, wantErr: `tun: invalid Config.Name "..": "." and ".." are not allowed`},
		{name: "addresses", cfg: Config{Addrs: []netip.Prefix{p("198.18.0.1/24"), p("fd00::1/64")}}, mtu: 1500, queues: 1},
		{name: "invalid address", cfg: Config{Addrs: []netip.Prefix{p("198.18.0.1/24"), {}}}, wantErr: "tun: invalid Config.Addrs[1] invalid Prefix: not a valid prefix"},
		{name: "mapped address", cfg: Config{Addrs: []netip.Prefix{p("::ffff:198.18.0.1/120")}}, wantErr: "tun: invalid Config.Addrs[0] ::ffff:198.18.0.1/120: IPv4-mapped IPv6 address, use the IPv4 form"},
		{name: "routes", cfg: Config{Up: true, Routes: []netip.Prefix{p("198.18.4.0/24"), p("fd00:1::/64")}}, mtu: 1500, queues: 1},
		{name: "routes while down", cfg: Config{Routes: []netip.Prefix{p("198.18.4.0/24")}}, wantErr: "tun: Config.Routes needs Config.Up: the kernel adds no route through a device that is down"},
		{name: "water", cfg: Config{Driver: DriverWater, MTU: 9000}, mtu: 9000, queues: 1},
		{name: "water with multiqueue", cfg: Config{Driver: DriverWater, MultiQueue: true}, wantErr: `tun: Config.MultiQueue is not supported with Config.Driver "water", which opens one queue: use Config.Driver "kernel" (Linux) for several`},
		{name: "water with two queues", cfg: Config{Driver: DriverWater, MultiQueue: true, Queues: 2}, wantErr: `tun: Config.MultiQueue is not supported with Config.Driver "water", which opens one queue: use Config.Driver "kernel" (Linux) for several`},
		{name: "water with offloads required", cfg: Config{Driver: DriverWater, RequireOffload: true}, wantErr: `tun: Config.RequireOffload is not supported with Config.Driver "water", which cannot set IFF_VNET_HDR: use Config.Driver "kernel" (Linux) for the offloads`},
		{name: "water without offloads", cfg: Config{Driver: DriverWater, NoOffload: true}, mtu: 1500, queues: 1},
		{name: "offloads required and refused", cfg: Config{RequireOffload: true, NoOffload: true}, wantErr: "tun: Config.RequireOffload and Config.NoOffload contradict each other: set one"},
		{name: "unknown driver", cfg: Config{Driver: "vpp"}, wantErr: `tun: invalid Config.Driver "vpp": want kernel or water, or empty for the default`},
		{name: "route with host bits", cfg: Config{Up: true, Routes: []netip.Prefix{p("198.18.4.1/24")}}, wantErr: "tun: invalid Config.Routes[0] 198.18.4.1/24: host bits set, want 198.18.4.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.checkOn("linux") // TestConfigCheckFreeBSD has FreeBSD's rules
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("check() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("check(): %v", err)
			}
			if diff := cmp.Diff(struct{ MTU, Queues int }{tt.mtu, tt.queues}, struct{ MTU, Queues int }{got.MTU, got.Queues}); diff != "" {
				t.Errorf("defaults (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseDriver(t *testing.T) {
	for _, d := range Drivers() {
		if got, err := ParseDriver(string(d)); err != nil || got != d {
			t.Errorf("ParseDriver(%q) = %q, %v", d, got, err)
		}
	}
	want := `unknown driver "tap": want kernel or water`
	switch runtime.GOOS {
	case "linux":
	case "freebsd":
		want = `unknown driver "tap": want freebsd`
	default:
		want = `unknown driver "tap": want water`
	}
	if _, err := ParseDriver("tap"); err == nil || err.Error() != want {
		t.Errorf("ParseDriver(tap) = %v, want %q", err, want)
	}
	if _, err := ParseDriver(""); err == nil {
		t.Errorf("ParseDriver(\"\") succeeded; the empty string is no driver's name")
	}
	if runtime.GOOS != "linux" {
		want := `tun: invalid Config.Driver "kernel": it is Linux-only; on ` + runtime.GOOS + ` use ` + driverList()
		if err := (Config{Driver: DriverKernel}).Validate(); err == nil || err.Error() != want {
			t.Errorf("kernel driver off Linux: %v, want %q", err, want)
		}
	}
}
