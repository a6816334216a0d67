//go:build linux

package sandbox

import (
	"fmt"
	"strings"
	"time"

	"github.com/ustacknet/ustack/tun"
)

// ConfigError reports a field of Options or Config that Run, Attach or
// NewGateway refuses. Each checks its configuration once, before it
// starts anything.
type ConfigError struct {
	// Field is the field's name as in the Go source, with its path from
	// the value passed: "MTU" or "Gateway.CIDR" for Run and Attach, "CIDR"
	// for NewGateway.
	Field string
	// Value is the value refused: the field's, or the element's for a
	// list.
	Value any
	// Allowed says what the field takes, such as "1280-65520".
	Allowed string
	// Reason, if not "", says what is wrong with a value that is of the
	// allowed kind.
	Reason string
	// Err, if not nil, is the system's refusal of a well-formed value,
	// such as an outbound address this host does not have: the value is
	// right in itself, but not here.
	Err error
}

// Error is "sandbox: FIELD VALUE: PROBLEM" (see Problem).
func (e *ConfigError) Error() string {
	return fmt.Sprintf("sandbox: %s %s: %s", e.Field, e.ValueString(), e.Problem())
}

// Unwrap returns Err.
func (e *ConfigError) Unwrap() error { return e.Err }

// ValueString is Value as text, quoted unless it is a number or a
// duration.
func (e *ConfigError) ValueString() string {
	switch v := e.Value.(type) {
	case nil:
		return "nil"
	case int, uint16, time.Duration:
		return fmt.Sprint(v)
	default:
		return fmt.Sprintf("%q", fmt.Sprint(v))
	}
}

// Problem is what is wrong and what is allowed: "want ALLOWED", or
// "REASON: ERR; want ALLOWED" (without what is not set).
func (e *ConfigError) Problem() string {
	why := e.Reason
	if e.Err != nil {
		if why != "" {
			why += ": "
		}
		why += e.Err.Error()
	}
	if why == "" {
		return "want " + e.Allowed
	}
	if e.Allowed == "" {
		return why
	}
	return why + "; want " + e.Allowed
}

// within prefixes the field of a *ConfigError with the path to the value
// that holds it ("Gateway."), and returns other errors as they are.
func within(path string, err error) error {
	if ce, ok := err.(*ConfigError); ok {
		c := *ce
		c.Field = path + c.Field
		return &c
	}
	return err
}

// allowed is what each checked field takes (ConfigError.Allowed): the one
// place these words are written. Options's fields, Config's and Target's
// (as "Target.PID") share it.
var allowed = map[string]string{
	"MTU":            "1280-65520",
	"IfName":         "an interface name of at most 15 bytes without '/', ':' or white space",
	"TxQueueLen":     fmt.Sprintf("1-%d packets", tun.MaxTxQueueLen),
	"Link":           "the sandbox's link, such as a tun.Device's LinkEndpoint",
	"CIDR":           "an IPv4 prefix from /8 to /25, such as 10.0.2.0/24 (the guest is .100)",
	"CIDR6":          "an IPv6 prefix from /64 to /120, such as fd00::/64",
	"UDPTimeout":     "at least 1s",
	"MaxFlows":       "at least 1",
	"MaxSYNs":        "at least 1",
	"RelayBuffer":    "at least 65536 bytes (64 KiB)",
	"TCPIdleTimeout": "0 (off) or a positive duration",
	"TimeWait":       "1ms to 10m",
	"Target.PID":     "a process ID above 0, or 0 for Target.NetNS",
	"Target.NetNS":   "a PID or a namespace path (not both), such as /proc/PID/ns/net or /run/netns/NAME",
	"OutboundAddrs":  "an IPv4 or IPv6 address of this host, global or private (not loopback, link-local, multicast or unspecified)",
}

// Allowed returns what the field named field (as in ConfigError.Field,
// "MTU" or "Gateway.CIDR") takes, as its *ConfigError says, or "" for a
// field that is not checked. A caller that refuses values the library
// takes (such as 0, which means "the default" here) can refuse them in
// the same words.
func Allowed(field string) string { return allowed[strings.TrimPrefix(field, "Gateway.")] }

// fieldError is the *ConfigError for value v of field.
func fieldError(field string, v any) *ConfigError {
	return &ConfigError{Field: field, Value: v, Allowed: allowed[field]}
}
