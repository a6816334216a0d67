package tun

import (
	"fmt"

	"github.com/songgao/water"
)

// waterHint is appended to water's errors.
const waterHint = " (install the TAP-Windows driver, component tap0901, as OpenVPN ships it, and run as Administrator)"

// waterConfig asks water for a TAP-Windows adapter in TUN mode. Config.Name
// selects the adapter by its friendly name (empty: the first tap0901
// adapter). TUN mode needs the system's IPv4 address and subnet, from
// which TAP-Windows answers ARP for the stack's side; it is the first IPv4
// entry of Config.Addrs.
func waterConfig(c checked) (water.Config, error) {
	p := water.PlatformSpecificParams{ComponentID: "tap0901", InterfaceName: c.Name}
	for _, a := range c.Addrs {
		if a.Addr().Is4() {
			p.Network = a.String()
			break
		}
	}
	if p.Network == "" {
		return water.Config{}, fmt.Errorf("tun: Config.Addrs needs an IPv4 address on Windows: TAP-Windows' TUN mode is set up from the system's IPv4 address and subnet")
	}
	return water.Config{DeviceType: water.TUN, PlatformSpecificParams: p}, nil
}

func configCommands(name string, c checked) [][]string { return windowsCommands(name, c) }
