//go:build linux

package sandbox

import (
	"net/netip"
	"os"
	"strings"
)

// resolvConf reads the nameservers of a resolv.conf file.
func resolvConf(path string) []netip.AddrPort {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			a, err := netip.ParseAddr(strings.Split(f[1], "%")[0])
			if err == nil {
				out = append(out, netip.AddrPortFrom(a.Unmap(), 53))
			}
		}
	}
	return out
}
