//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
)

// TestAdmit: the one admission of every path maps the guest's
// destinations to host addresses, and refuses with an *AdmissionError
// that matches ErrSource for a source that is not the guest's, and
// ErrDenied for a destination the policy or the layout refuses.
func TestAdmit(t *testing.T) {
	w := newWorld(t, func(c *Config) {
		c.Policy.AllowHostLoopback = true
		c.DNSUpstream = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53")}
	})
	noLoop := newWorld(t, nil)
	deny := newWorld(t, func(c *Config) { c.Policy.Deny = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")} })
	for _, tc := range []struct {
		name     string
		gw       *Gateway
		src, dst string
		want     string // the host address; "" for a refusal
		err      error
	}{
		{"host loopback", w.gw, "10.0.2.100:40000", "10.0.2.2:80", "127.0.0.1:80", nil},
		{"host loopback v6", w.gw, "[fd00::100]:40000", "[fd00::2]:80", "[::1]:80", nil},
		{"DNS", w.gw, "10.0.2.100:40000", "10.0.2.3:53", "127.0.0.53:53", nil},
		{"elsewhere", w.gw, "10.0.2.100:40000", "198.18.0.1:80", "198.18.0.1:80", nil},
		{"DNS address, other port", w.gw, "10.0.2.100:40000", "10.0.2.3:80", "", ErrDenied},
		{"denied by policy", deny.gw, "10.0.2.100:40000", "198.18.0.1:80", "", ErrDenied},
		{"loopback closed", noLoop.gw, "10.0.2.100:40000", "10.0.2.2:80", "", ErrDenied},
		{"guest network", w.gw, "10.0.2.100:40000", "10.0.2.7:80", "", ErrDenied},
		{"crafted loopback", w.gw, "10.0.2.100:40000", "127.0.0.1:80", "", ErrDenied},
		{"foreign source", w.gw, "192.0.2.1:40000", "10.0.2.2:80", "", ErrSource},
		{"gateway as source", w.gw, "10.0.2.2:40000", "198.18.0.1:80", "", ErrSource},
		{"foreign source, denied destination", w.gw, "192.0.2.1:40000", "127.0.0.1:80", "", ErrSource},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := netip.MustParseAddrPort(tc.src), netip.MustParseAddrPort(tc.dst)
			to, err := tc.gw.admit(src, dst)
			if tc.err == nil {
				if err != nil || to.String() != tc.want {
					t.Fatalf("admit(%v, %v) = %v, %v; want %s", src, dst, to, err, tc.want)
				}
				return
			}
			var ae *AdmissionError
			if !errors.Is(err, tc.err) || !errors.As(err, &ae) || ae.Src != src || ae.Dst != dst || ae.Reason == "" || to.IsValid() {
				t.Fatalf("admit(%v, %v) = %v, %#v; want an *AdmissionError for these addresses matching %v", src, dst, to, err, tc.err)
			}
		})
	}
}

// TestAdmissionPaths: the TCP relay and gVisor's forwarder (NoTCPRelay)
// take the same admission: a destination it refuses is refused with a
// reset and counted as denied, one it allows is carried and counted.
func TestAdmissionPaths(t *testing.T) {
	hp := hostHTTP(t, "hello from the host")
	for _, tc := range []struct {
		name    string
		noRelay bool
	}{{"relay", false}, {"gvisor", true}} {
		t.Run(tc.name, func(t *testing.T) {
			closed := newWorld(t, func(c *Config) { c.NoTCPRelay = tc.noRelay })
			if (closed.gw.relay == nil) != tc.noRelay {
				t.Fatalf("relay %v with NoTCPRelay %v", closed.gw.relay != nil, tc.noRelay)
			}
			if _, err := closed.guest.Dial("tcp", fmt.Sprintf("10.0.2.2:%d", hp.Port())); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial to closed host loopback: %v, want ECONNREFUSED", err)
			}
			if s := closed.gw.Stats(); s.Denied != 1 || s.TCPFlows != 0 {
				t.Errorf("after a denied dial: Denied %d, TCPFlows %d; want 1 and 0", s.Denied, s.TCPFlows)
			}
			open := newWorld(t, func(c *Config) { c.NoTCPRelay = tc.noRelay; c.Policy.AllowHostLoopback = true })
			if body, err := open.get(fmt.Sprintf("http://10.0.2.2:%d/", hp.Port())); err != nil || body != "hello from the host" {
				t.Fatalf("GET through an allowed destination: %q %v", body, err)
			}
			if s := open.gw.Stats(); s.Denied != 0 || s.TCPFlows != 1 {
				t.Errorf("after an allowed GET: Denied %d, TCPFlows %d; want 0 and 1", s.Denied, s.TCPFlows)
			}
		})
	}
}
