package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/internal/privtest"
)

var replyRE = regexp.MustCompile(`(?m)^64 bytes from (\S+): icmp_seq=(\d+) ident=(\d+) time=[0-9.]+ ms$`)

// pingReplies returns "from seq ident" for each reply line of out.
func pingReplies(out string) []string {
	var got []string
	for _, m := range replyRE.FindAllStringSubmatch(out, -1) {
		got = append(got, m[1]+" "+m[2]+" "+m[3])
	}
	return got
}

func TestPing(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"in memory v4", []string{"ping", "-c", "3", "-i", "0", "--id-range", "7000-7009", "198.18.0.1"},
			[]string{"198.18.0.1 1 7000", "198.18.0.1 2 7000", "198.18.0.1 3 7000"}},
		{"in memory v6", []string{"ping", "-c", "2", "-i", "0", "fd00:18::1"},
			[]string{"fd00:18::1 1 49152", "fd00:18::1 2 49152"}},
		{"kernel v4", []string{"ping", "--tun", "-c", "2", "-i", "0", "--id-range", "300-301", "198.18.0.1"},
			[]string{"198.18.0.1 1 300", "198.18.0.1 2 300"}},
		{"kernel v6", []string{"ping", "--tun", "-c", "2", "-i", "0", "fd00:18::1"},
			[]string{"fd00:18::1 1 49152", "fd00:18::1 2 49152"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.args[1] == "--tun" {
				privtest.Require(t)
			}
			out, err := run(tc.args...)
			if err != nil {
				t.Fatalf("ping: %v\n%s", err, out)
			}
			if diff := cmp.Diff(tc.want, pingReplies(out)); diff != "" {
				t.Errorf("replies (-want +got):\n%s\n%s", diff, out)
			}
			want := len(tc.want)
			if !strings.Contains(out, itoa(want)+" packets transmitted, "+itoa(want)+" received, 0% packet loss") {
				t.Errorf("no summary line for %d packets:\n%s", want, out)
			}
		})
	}
}

// TestPingNoReplyExit1 pings an address nobody has: the exit status is 1.
func TestPingNoReplyExit1(t *testing.T) {
	out, err := run("ping", "-c", "2", "-i", "0", "-W", "20ms", "198.18.0.77")
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("ping of nobody = %v (exit %d), want exit 1\n%s", err, exitCode(err), out)
	}
	if !strings.Contains(out, "2 packets transmitted, 0 received, 100% packet loss") || strings.Count(out, "no reply for icmp_seq=") != 2 {
		t.Errorf("output:\n%s", out)
	}
}

func TestPingBadUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no host", []string{"ping"}, "takes one HOST"},
		{"name", []string{"ping", "example.com"}, `invalid HOST "example.com": want a literal IPv4 or IPv6 address`},
		{"multicast", []string{"ping", "224.0.0.1"}, "ping to a multicast, broadcast or unspecified address is not supported; want a unicast address"},
		{"multicast v6", []string{"ping", "ff02::1"}, "want a unicast address"},
		{"count", []string{"ping", "-c", "0", "198.18.0.1"}, `"--count" flag: want 1-1000000`},
		{"size", []string{"ping", "-s", "70000", "198.18.0.1"}, `"--size" flag: want 0-65000`},
		{"interval", []string{"ping", "-i", "-1s", "198.18.0.1"}, `"--interval" flag: want 0 to 1h`},
		{"timeout", []string{"ping", "-W", "0s", "198.18.0.1"}, `"--timeout" flag: want 1ms to 1h`},
		{"id range", []string{"ping", "--id-range", "0-5", "198.18.0.1"}, `"--id-range" flag`},
	} {
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
