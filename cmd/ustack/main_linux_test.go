package main

import (
	"testing"

	"github.com/ustacknet/ustack/sandbox"
)

func TestSandboxBadFlagsExit2(t *testing.T) {
	checkExit2(t, []exit2Case{
		{"sandbox negative idle timeout", []string{"sandbox", "--tcp-idle-timeout", "-1s", "--", "true"}, `invalid argument -1s for "--tcp-idle-timeout" flag: want 0 (never) or at least 1s`},
		{"sandbox tiny idle timeout", []string{"sandbox", "--tcp-idle-timeout", "10ms", "--", "true"}, `"--tcp-idle-timeout" flag: want 0 (never) or at least 1s`},
		{"sandbox tiny tcp buffer", []string{"sandbox", "--tcp-buffer", "100", "--", "true"}, `invalid argument 100 for "--tcp-buffer" flag: want at least 65536 bytes`},
		{"sandbox negative procs", []string{"sandbox", "--procs", "-1", "--", "true"}, `"--procs" flag: want 0 (one per CPU) to 1024`},
		{"sandbox too many procs", []string{"sandbox", "--procs", "5000", "--", "true"}, `"--procs" flag`},
		{"sandbox bad metrics", []string{"sandbox", "--metrics", "9109", "--", "true"}, `"--metrics" flag: want IP:PORT`},
		{"sandbox netns and command", []string{"sandbox", "--netns", "1", "--", "true"}, "give no command with it"},
		{"sandbox no command no netns", []string{"sandbox"}, "--netns PID|PATH"},
		{"sandbox netns pid 0", []string{"sandbox", "--netns", "0"}, `"--netns" flag: want a PID from 1 to 4194304 or a path`},
		{"sandbox netns huge pid", []string{"sandbox", "--netns", "99999999999"}, `"--netns" flag: want a PID from 1 to 4194304`},
		{"sandbox userns alone", []string{"sandbox", "--userns", "/proc/1/ns/user", "--", "true"}, "--userns goes with --netns"},
		{"sandbox closed ready-fd", []string{"sandbox", "--ready-fd", "987", "--", "true"}, `"--ready-fd" flag: not an open descriptor`},
		{"sandbox negative exit-fd", []string{"sandbox", "--exit-fd", "-5", "--", "true"}, `"--exit-fd" flag: want an open descriptor`},
		{"sandbox same control fds", []string{"sandbox", "--ready-fd", "2", "--exit-fd", "2", "--", "true"}, "want two descriptors"},
		{"sandbox bad if-name", []string{"sandbox", "--if-name", "a/b", "--", "true"}, `"--if-name" flag: want an interface name`},
		{"sandbox link-local outbound", []string{"sandbox", "--outbound-addr", "fe80::1", "--", "true"}, `global or private (not loopback, link-local`},
		{"sandbox bad outbound", []string{"sandbox", "--outbound-addr", "eth0", "--", "true"}, `"--outbound-addr" flag: want an IPv4 or IPv6 address`},
		{"sandbox two outbound v4", []string{"sandbox", "--outbound-addr", "198.18.0.1", "--outbound-addr", "198.18.0.2", "--", "true"}, "at most one IPv4 and one IPv6"},
	})
}

func TestSandboxTarget(t *testing.T) {
	tests := []struct {
		netns string
		want  sandbox.Target
	}{
		{"", sandbox.Target{}},
		{"4242", sandbox.Target{PID: 4242}},
		{"blue", sandbox.Target{NetNS: "/run/netns/blue"}},
		{"/var/run/netns/blue", sandbox.Target{NetNS: "/var/run/netns/blue"}},
		{"./ns", sandbox.Target{NetNS: "./ns"}},
	}
	for _, tc := range tests {
		f := sandboxFlags{netns: tc.netns}
		got, err := f.target()
		if err != nil {
			t.Errorf("--netns %q: %v", tc.netns, err)
			continue
		}
		if tc.netns == "" {
			if got != nil {
				t.Errorf("no --netns: target %+v, want none", *got)
			}
			continue
		}
		if got == nil || *got != tc.want {
			t.Errorf("--netns %q: target %+v, want %+v", tc.netns, got, tc.want)
		}
	}
}
