//go:build linux

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/tun"
)

// Each field Run and Attach refuse gives a *ConfigError naming the field
// (with its path from Options), the value and what is allowed; the check
// is made once, before anything starts.
func TestOptionsConfigError(t *testing.T) {
	tests := []struct {
		name    string
		o       Options
		field   string
		value   any
		allowed string
	}{
		{"MTU low", Options{MTU: 1279}, "MTU", 1279, "1280-65520"},
		{"MTU high", Options{MTU: 65521}, "MTU", 65521, "1280-65520"},
		{"IfName", Options{IfName: "a/b"}, "IfName", "a/b", "an interface name of at most 15 bytes without '/', ':' or white space"},
		{"TxQueueLen", Options{TxQueueLen: -1}, "TxQueueLen", -1, "1-65536 packets"},
		{"CIDR too long", Options{Gateway: Config{CIDR: netip.MustParsePrefix("10.0.2.0/26")}}, "Gateway.CIDR", netip.MustParsePrefix("10.0.2.0/26"), Allowed("CIDR")},
		{"CIDR IPv6", Options{Gateway: Config{CIDR: netip.MustParsePrefix("fd00::/64")}}, "Gateway.CIDR", netip.MustParsePrefix("fd00::/64"), Allowed("CIDR")},
		{"CIDR6", Options{Gateway: Config{CIDR6: netip.MustParsePrefix("fd00::/48")}}, "Gateway.CIDR6", netip.MustParsePrefix("fd00::/48"), Allowed("CIDR6")},
		{"UDPTimeout", Options{Gateway: Config{UDPTimeout: time.Millisecond}}, "Gateway.UDPTimeout", time.Millisecond, "at least 1s"},
		{"MaxFlows", Options{Gateway: Config{MaxFlows: -1}}, "Gateway.MaxFlows", -1, "at least 1"},
		{"MaxSYNs", Options{Gateway: Config{MaxSYNs: -1}}, "Gateway.MaxSYNs", -1, "at least 1"},
		{"RelayBuffer", Options{Gateway: Config{RelayBuffer: 100}}, "Gateway.RelayBuffer", 100, "at least 65536 bytes (64 KiB)"},
		{"TCPIdleTimeout", Options{Gateway: Config{TCPIdleTimeout: -time.Second}}, "Gateway.TCPIdleTimeout", -time.Second, Allowed("TCPIdleTimeout")},
		{"TimeWait", Options{Gateway: Config{TimeWait: time.Hour}}, "Gateway.TimeWait", time.Hour, "1ms to 10m"},
		{"OutboundAddrs loopback", Options{Gateway: Config{OutboundAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}}, "Gateway.OutboundAddrs", netip.MustParseAddr("127.0.0.1"), Allowed("OutboundAddrs")},
		{"OutboundAddrs link-local", Options{Gateway: Config{OutboundAddrs: []netip.Addr{netip.MustParseAddr("fe80::1")}}}, "Gateway.OutboundAddrs", netip.MustParseAddr("fe80::1"), Allowed("OutboundAddrs")},
		{"OutboundAddrs two IPv4", Options{Gateway: Config{OutboundAddrs: []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}}}, "Gateway.OutboundAddrs", netip.MustParseAddr("198.18.0.2"), "at most one IPv4 and one IPv6 address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			_, err := o.check()
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("check() = %v, want a *ConfigError", err)
			}
			type fields struct{ Field, Value, Allowed string }
			got := fields{ce.Field, fmt.Sprintf("%T %v", ce.Value, ce.Value), ce.Allowed}
			want := fields{tt.field, fmt.Sprintf("%T %v", tt.value, tt.value), tt.allowed}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ConfigError (-want +got):\n%s", diff)
			}
			if tt.allowed == "" {
				t.Errorf("Allowed(%q) is empty", tt.field)
			}
			// The message names the field, the value and what is allowed.
			msg := err.Error()
			for _, part := range []string{"sandbox: " + tt.field + " ", ce.ValueString(), "want " + tt.allowed} {
				if !strings.Contains(msg, part) {
					t.Errorf("message %q lacks %q", msg, part)
				}
			}
			if strings.Contains(msg, "--") {
				t.Errorf("message %q names a command-line flag", msg)
			}
		})
	}
}

// NewGateway checks a Config on its own: the fields are named without the
// path through Options.
func TestNewGatewayConfigError(t *testing.T) {
	p, err := tun.NewPipe(1500)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a := p.A()
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{}, "Link"},
		{Config{Link: a, MaxFlows: -5}, "MaxFlows"},
		{Config{Link: a, CIDR: netip.MustParsePrefix("10.0.0.0/30")}, "CIDR"},
	} {
		_, err := NewGateway(tc.cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("NewGateway: %v, want a *ConfigError for %s", err, tc.field)
		}
	}
}

// An outbound address of the right kind that this host does not have:
// the system's refusal is ConfigError.Err.
func TestOutboundAddrNotOfThisHost(t *testing.T) {
	a := netip.MustParseAddr("198.18.253.77") // on no interface here
	_, err := Config{OutboundAddrs: []netip.Addr{a}}.AddrsOf()
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "OutboundAddrs" || ce.Value != a || ce.Err == nil {
		t.Fatalf("AddrsOf: %v, want a *ConfigError for OutboundAddrs %v with the system's error", err, a)
	}
	if !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Errorf("error %v does not match EADDRNOTAVAIL", err)
	}
	want := `sandbox: OutboundAddrs "198.18.253.77": not usable as a source address here: `
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("message %q, want it to start %q", err, want)
	}
}

// Attach refuses a Target it cannot serve with a *ConfigError, before it
// watches, opens or makes anything.
func TestTargetConfigError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target Target
		field  string
		reason string
	}{
		{"negative PID", Target{PID: -1}, "Target.PID", ""},
		{"PID and path", Target{PID: 1, NetNS: "/run/netns/x"}, "Target.NetNS", "given with Target.PID"},
		{"neither", Target{}, "Target.NetNS", "no namespace to attach to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, err := Attach(context.Background(), Options{}, tc.target)
			var ce *ConfigError
			if code != 0 || !errors.As(err, &ce) || ce.Field != tc.field || ce.Reason != tc.reason || ce.Allowed == "" {
				t.Fatalf("Attach = %d, %v; want 0 and a *ConfigError for %s (reason %q)", code, err, tc.field, tc.reason)
			}
		})
	}
}
