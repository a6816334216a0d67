//go:build linux

package sandbox

import (
	"errors"
	"net/netip"
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
