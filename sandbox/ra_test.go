//go:build linux

package sandbox

import (
	"net/netip"
	"testing"

	"github.com/ustacknet/ustack/internal/ra"
)

// The Gateway's router advertisements advertise CIDR6 for SLAAC and DNS6
// as the resolver, unless DNS is off (the adverts themselves are
// package ra's tests').
func TestRouterAdvertConfig(t *testing.T) {
	prefix := netip.MustParsePrefix("fd00:1:2:3::/64")
	for _, tc := range []struct {
		name  string
		noDNS bool
		want  ra.Config
	}{
		{"DNS", false, ra.Config{Prefix: prefix, DNS: netip.MustParseAddr("fd00:1:2:3::3")}},
		{"NoDNS", true, ra.Config{Prefix: prefix}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, func(c *Config) { c.CIDR6 = prefix; c.NoDNS = tc.noDNS })
			if got := w.gw.raConfig(); got != tc.want {
				t.Errorf("router advert config (-want +got):\n- %+v\n+ %+v", tc.want, got)
			}
		})
	}
}
