package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ustacknet/ustack/sandbox"
)

// configNames names, for each field of sandbox.Options and Config that
// the library checks (sandbox.ConfigError.Field), what sets it on each
// command line: a flag ("--mtu") or an argument ("TAPNAME"); "" where the
// command cannot set it. It is the one table of these names.
var configNames = map[string]struct{ sandbox, slirp string }{
	"MTU":                    {"--mtu", "--mtu"},
	"IfName":                 {"--if-name", "TAPNAME"},
	"TxQueueLen":             {"--tx-queue-len", ""},
	"Gateway.CIDR":           {"--cidr", "--cidr"},
	"Gateway.CIDR6":          {"--cidr6", ""},
	"Gateway.UDPTimeout":     {"--udp-timeout", ""},
	"Gateway.MaxFlows":       {"--max-flows", ""},
	"Gateway.RelayBuffer":    {"--tcp-buffer", ""},
	"Gateway.TCPIdleTimeout": {"--tcp-idle-timeout", ""},
	// slirp4netns: --outbound-addr6 for an IPv6 address (configName).
	"Gateway.OutboundAddrs": {"--outbound-addr", "--outbound-addr"},
}

// configName is what sets field on the command line of command ("sandbox"
// or "slirp4netns"), for a refused value v; "" if nothing does.
func configName(command, field string, v any) string {
	n := configNames[field]
	if command != "slirp4netns" {
		return n.sandbox
	}
	if field == "Gateway.OutboundAddrs" && strings.Contains(fmt.Sprint(v), ":") {
		return "--outbound-addr6"
	}
	return n.slirp
}

// configError is a *sandbox.ConfigError reworded to name the command
// line's flag or argument instead of the library's field.
type configError struct {
	msg string
	ce  *sandbox.ConfigError
}

func (e *configError) Error() string { return e.msg }
func (e *configError) Unwrap() error { return e.ce }

// flagError rewrites a *sandbox.ConfigError in err to name what sets
// the field on command's command line, as cobra names a bad flag. A
// value wrong in itself is a usage error (exit 2), said before anything
// starts; a well-formed value that the system refused (ConfigError.Err,
// such as an outbound address this host does not have) is not. Other
// errors pass unchanged.
func flagError(command string, err error) error {
	var ce *sandbox.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	if name := configName(command, ce.Field, ce.Value); name != "" {
		msg := fmt.Sprintf("invalid %s %s: %s", name, ce.ValueString(), ce.Problem())
		if strings.HasPrefix(name, "-") {
			msg = fmt.Sprintf("invalid argument %s for %q flag: %s", ce.ValueString(), name, ce.Problem())
		}
		err = &configError{msg: msg, ce: ce}
	}
	if ce.Err != nil {
		return err
	}
	return usageError{err}
}

// zeroError refuses 0 given on the command line for a field where the
// library reads 0 as "the default": the flags spell their defaults out,
// so 0 is a value like another, refused in the library's words for the
// field.
func zeroError(field string, zero any) error {
	return &sandbox.ConfigError{Field: field, Value: zero, Allowed: sandbox.Allowed(field)}
}

// pcapFile is --pcap's file for ustack sandbox. It is opened, and made if
// need be, with the flags, so that a path that cannot be written is bad
// usage said before anything starts; but an existing file is emptied
// only at the first write, which comes once the library has accepted the
// configuration, and a file made here and never written is removed on
// Close: a configuration the library refuses leaves the path as it was.
type pcapFile struct {
	f       *os.File
	created bool
	written bool
}

func openPcapLater(path string) (*pcapFile, error) {
	_, statErr := os.Lstat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("invalid argument %q for \"--pcap\" flag: %v; want a path where a file can be written", path, err)
	}
	return &pcapFile{f: f, created: errors.Is(statErr, os.ErrNotExist)}, nil
}

// Write empties the file at the first call, then writes p.
func (p *pcapFile) Write(b []byte) (int, error) {
	if !p.written {
		p.written = true
		if err := p.f.Truncate(0); err != nil {
			return 0, err
		}
	}
	return p.f.Write(b)
}

func (p *pcapFile) Close() error {
	err := p.f.Close()
	if p.created && !p.written {
		os.Remove(p.f.Name())
	}
	return err
}
