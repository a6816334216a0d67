package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ustacknet/ustack/sandbox"
)

// Values the library refuses (sandbox.ConfigError) reach the user under
// the flag or argument that set them, as a usage error (exit 2), before
// anything starts.
func TestConfigErrorNamesTheFlag(t *testing.T) {
	checkExit2(t, []exit2Case{
		{"sandbox mtu", []string{"sandbox", "--mtu", "1000", "--", "true"}, `invalid argument 1000 for "--mtu" flag: want 1280-65520`},
		{"sandbox zero mtu", []string{"sandbox", "--mtu", "0", "--", "true"}, `invalid argument 0 for "--mtu" flag: want 1280-65520`},
		{"sandbox cidr", []string{"sandbox", "--cidr", "10.0.2.0/26", "--", "true"}, `invalid argument "10.0.2.0/26" for "--cidr" flag: want an IPv4 prefix from /8 to /25`},
		{"sandbox cidr6", []string{"sandbox", "--cidr6", "fd00::/48", "--", "true"}, `invalid argument "fd00::/48" for "--cidr6" flag: want an IPv6 prefix from /64 to /120`},
		{"sandbox udp-timeout", []string{"sandbox", "--udp-timeout", "10ms", "--", "true"}, `invalid argument 10ms for "--udp-timeout" flag: want at least 1s`},
		{"sandbox zero udp-timeout", []string{"sandbox", "--udp-timeout", "0", "--", "true"}, `invalid argument 0s for "--udp-timeout" flag: want at least 1s`},
		{"sandbox max-flows", []string{"sandbox", "--max-flows", "-3", "--", "true"}, `invalid argument -3 for "--max-flows" flag: want at least 1`},
		{"sandbox zero max-flows", []string{"sandbox", "--max-flows", "0", "--", "true"}, `invalid argument 0 for "--max-flows" flag: want at least 1`},
		{"sandbox zero tcp-buffer", []string{"sandbox", "--tcp-buffer", "0", "--", "true"}, `invalid argument 0 for "--tcp-buffer" flag: want at least 65536 bytes`},
		{"sandbox if-name", []string{"sandbox", "--if-name", "name-too-long-xxxx", "--", "true"}, `invalid argument "name-too-long-xxxx" for "--if-name" flag: want an interface name`},
		{"sandbox loopback outbound", []string{"sandbox", "--outbound-addr", "127.0.0.1", "--", "true"}, `invalid argument "127.0.0.1" for "--outbound-addr" flag: want an IPv4 or IPv6 address of this host`},
		{"sandbox netns mtu", []string{"sandbox", "--netns", "1", "--mtu", "70000"}, `invalid argument 70000 for "--mtu" flag`},
		{"slirp4netns mtu", []string{"slirp4netns", "--mtu", "1000", "1"}, `invalid argument 1000 for "--mtu" flag: want 1280-65520`},
		{"slirp4netns zero mtu", []string{"slirp4netns", "--mtu", "0", "1"}, `invalid argument 0 for "--mtu" flag: want 1280-65520`},
		{"slirp4netns cidr", []string{"slirp4netns", "--cidr", "10.0.0.0/30", "1"}, `invalid argument "10.0.0.0/30" for "--cidr" flag: want an IPv4 prefix`},
		{"slirp4netns tapname", []string{"slirp4netns", "1", "a/b"}, `invalid TAPNAME "a/b": want an interface name`},
		{"slirp4netns empty tapname", []string{"slirp4netns", "1", ""}, `invalid TAPNAME "": want an interface name`},
		{"slirp4netns outbound6", []string{"slirp4netns", "--outbound-addr6", "fe80::1", "1"}, `invalid argument "fe80::1" for "--outbound-addr6" flag: want an IPv4 or IPv6 address of this host`},
		{"slirp4netns outbound", []string{"slirp4netns", "--outbound-addr", "127.0.0.1", "1"}, `invalid argument "127.0.0.1" for "--outbound-addr" flag`},
	})
}

// Every name in the table is a field the library checks.
func TestConfigNamesAreCheckedFields(t *testing.T) {
	for field := range configNames {
		if sandbox.Allowed(field) == "" {
			t.Errorf("configNames has %q, which the library does not check", field)
		}
	}
}

// A well-formed value that the system refuses names the flag too, but is
// not a usage error; the library's error stays reachable.
func TestFlagErrorSystemRefusal(t *testing.T) {
	sys := errors.New("bind: cannot assign requested address")
	ce := &sandbox.ConfigError{Field: "Gateway.OutboundAddrs", Value: "198.18.0.9", Reason: "not usable as a source address here", Err: sys, Allowed: "an address of this host"}
	err := flagError("sandbox", ce)
	want := `invalid argument "198.18.0.9" for "--outbound-addr" flag: not usable as a source address here: bind: cannot assign requested address; want an address of this host`
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if code := exitCode(err); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	var got *sandbox.ConfigError
	if !errors.As(err, &got) || got != ce || !errors.Is(err, sys) {
		t.Errorf("errors.As/Is lose the library's error: %v", err)
	}
}

// --pcap's file is emptied only by the capture's first write, and one
// made for a run that never wrote is removed: a configuration refused
// after the flags were read leaves the path as it was.
func TestPcapFileLater(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old.pcap")
	os.WriteFile(old, []byte("earlier capture"), 0o600)
	p, err := openPcapLater(old)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if b, _ := os.ReadFile(old); string(b) != "earlier capture" {
		t.Errorf("an existing file never written: %q, want it untouched", b)
	}
	p, _ = openPcapLater(old)
	p.Write([]byte("new"))
	p.Close()
	if b, _ := os.ReadFile(old); string(b) != "new" {
		t.Errorf("an existing file written: %q, want only the new capture", b)
	}
	fresh := filepath.Join(dir, "fresh.pcap")
	p, _ = openPcapLater(fresh)
	p.Close()
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Errorf("a file made and never written: %v, want it removed", err)
	}
	if _, err := openPcapLater(filepath.Join(dir, "no", "x.pcap")); err == nil || !strings.Contains(err.Error(), `for "--pcap" flag`) {
		t.Errorf("an unwritable path: %v, want the --pcap flag named", err)
	}
}
