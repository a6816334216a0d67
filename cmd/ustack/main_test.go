package main

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func run(args ...string) (string, error) {
	var out bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

var rowRE = regexp.MustCompile(`(?m)^\d+\s+(tcp|udp|icmp)\s+(\d+|-)\s`)

func TestDemoInMemory(t *testing.T) {
	out, err := run("demo", "--range", "40000-40009")
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	var got []string
	for _, m := range rowRE.FindAllStringSubmatch(out, -1) {
		got = append(got, m[1]+" "+m[2])
	}
	want := []string{}
	for i := 0; i < 15; i++ {
		want = append(want, "tcp "+itoa(40000+i%10))
	}
	want = append(want, "udp 40000", "udp 40001")
	for i := 0; i < 12; i++ {
		want = append(want, "icmp "+itoa(40000+i%10))
	}
	for i := 0; i < 10; i++ {
		want = append(want, "tcp "+itoa(40000+(5+i)%10))
	}
	want = append(want, "tcp -", "tcp 40000", "tcp 40000")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("demo rows (-want +got):\n%s\n%s", diff, out)
	}
	if !strings.Contains(out, "ephemeral ports exhausted toward 198.18.0.1:9: range 40000-40009 (10 ports), 10 held toward it, 10 in use") {
		t.Errorf("demo output lacks the exhaustion error:\n%s", out)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestBadFlagsExit2(t *testing.T) {
	tests := []exit2Case{
		{"demo bad range", []string{"demo", "--range", "9-3"}, `"--range" flag`},
		{"demo tiny range", []string{"demo", "--range", "5-6"}, "at least 3 ports"},
		{"demo bad policy", []string{"demo", "--policy", "lifo"}, "sequential, random, hash"},
		{"demo extra arg", []string{"demo", "x"}, "takes no arguments"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"unknown flag", []string{"demo", "--nope"}, "unknown flag"},
		{"run no tun", []string{"run", "--addr", "198.18.0.2/24"}, "--tun NAME is required"},
		{"run no addr", []string{"run", "--tun", "u0"}, "--addr is required"},
		{"run bad addr", []string{"run", "--tun", "u0", "--addr", "198.18.0.2"}, `"--addr" flag`},
		{"run bad mtu", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--mtu", "20"}, `"--mtu" flag: want 68-65535`},
		{"run bad port", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--echo", "-1"}, `"--echo" flag`},
		{"run same ports", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--echo", "7", "--http", "7"}, "different ports"},
		{"run bad udp range", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--udp-range", "0-10"}, "0 is outside 1-65535"},
		{"run bad log level", []string{"run", "--log-level", "loud"}, "debug, info, warn or error"},
		{"ports no api", []string{"ports"}, "--api PATH is required"},
		{"run long tun name", []string{"run", "--tun", "name-too-long-xxxxxxxx", "--addr", "198.18.0.2/24"}, "longer than 15 bytes"},
		{"run bad metrics", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--metrics", "localhost:9109"}, `"--metrics" flag: want IP:PORT`},
		{"sandbox bad metrics", []string{"sandbox", "--metrics", "9109", "--", "true"}, `"--metrics" flag: want IP:PORT`},
		{"sandbox netns and command", []string{"sandbox", "--netns", "1", "--", "true"}, "give no command with it"},
		{"sandbox no command no netns", []string{"sandbox"}, "--netns PID|PATH"},
		{"sandbox netns pid 0", []string{"sandbox", "--netns", "0"}, `"--netns" flag: want a PID from 1 to 4194304 or a path`},
		{"sandbox netns huge pid", []string{"sandbox", "--netns", "99999999999"}, `"--netns" flag: want a PID from 1 to 4194304`},
		{"sandbox userns alone", []string{"sandbox", "--userns", "/proc/1/ns/user", "--", "true"}, "--userns goes with --netns"},
		{"sandbox closed ready-fd", []string{"sandbox", "--ready-fd", "987", "--", "true"}, `"--ready-fd" flag: not an open descriptor`},
		{"sandbox negative exit-fd", []string{"sandbox", "--exit-fd", "-5", "--", "true"}, `"--exit-fd" flag: want an open descriptor`},
		{"sandbox same control fds", []string{"sandbox", "--ready-fd", "2", "--exit-fd", "2", "--", "true"}, "want two descriptors"},
		{"sandbox zero tx-queue-len", []string{"sandbox", "--tx-queue-len", "0", "--", "true"}, `"--tx-queue-len" flag: want 1-65536 packets`},
		{"sandbox huge tx-queue-len", []string{"sandbox", "--tx-queue-len", "70000", "--", "true"}, `"--tx-queue-len" flag: want 1-65536 packets`},
		{"sandbox bad if-name", []string{"sandbox", "--if-name", "a/b", "--", "true"}, `"--if-name" flag: want an interface name`},
		{"sandbox link-local outbound", []string{"sandbox", "--outbound-addr", "fe80::1", "--", "true"}, `global or private (not loopback, link-local`},
		{"sandbox bad outbound", []string{"sandbox", "--outbound-addr", "eth0", "--", "true"}, `"--outbound-addr" flag: want an IPv4 or IPv6 address`},
		{"sandbox two outbound v4", []string{"sandbox", "--outbound-addr", "198.18.0.1", "--outbound-addr", "198.18.0.2", "--", "true"}, "at most one IPv4 and one IPv6"},
		{"run bad icmp range", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--icmp-range", "9-1"}, `"--icmp-range" flag`},
		{"run unwritable pcap", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--pcap", "/nonexistent/dir/x.pcap"}, `invalid argument "/nonexistent/dir/x.pcap" for "--pcap" flag: open /nonexistent/dir/x.pcap: no such file or directory; want a path where a file can be written`},
		{"run bad snaplen", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--pcap-snaplen", "-1"}, `"--pcap-snaplen" flag: want 0 (262144) or 1-262144`},
		{"run unknown driver", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--driver", "tap"}, `invalid argument "tap" for "--driver" flag: want ` + driverChoices()},
		{"run water multiqueue", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--driver", "water", "--queues", "2"}, "--queues 2 is not supported with the water driver, which opens one queue: use --driver kernel (Linux) for several"},
		{"run water offload", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--driver", "water", "--offload", "on"}, "--offload on is not supported with the water driver, which cannot set IFF_VNET_HDR: use --driver kernel (Linux) for the offloads"},
		{"run bad offload", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--offload", "maybe"}, `invalid argument "maybe" for "--offload" flag: want auto, on or off`},
		{"run zero queues", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--queues", "0"}, `invalid argument 0 for "--queues" flag: want 1-256`},
		{"demo unknown driver", []string{"demo", "--tun", "--driver", "vpp"}, `invalid argument "vpp" for "--driver" flag: want ` + driverChoices()},
		{"demo driver without tun", []string{"demo", "--driver", "water"}, "--driver goes with --tun"},
		{"run bad peer addr", []string{"run", "--tun", "u0", "--addr", "198.18.0.2/24", "--peer-addr", "::ffff:198.18.0.1/120"}, "IPv4-mapped"},
	}
	checkExit2(t, tests)
}

// exit2Case is a command line that must fail with exit code 2 and an
// error containing want.
type exit2Case struct {
	name string
	args []string
	want string
}

func checkExit2(t *testing.T, tests []exit2Case) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(tc.args...)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			if code := exitCode(err); code != 2 {
				t.Errorf("exit code %d, want 2 (err %v)", code, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}
