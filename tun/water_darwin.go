package tun

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/songgao/water"
)

// waterHint is appended to water's errors.
const waterHint = " (macOS utun needs root)"

// waterConfig asks water for a utun device: Config.Name is empty (the
// system picks utunN) or utunN.
func waterConfig(c checked) (water.Config, error) {
	if c.Name != "" {
		n, err := strconv.ParseUint(strings.TrimPrefix(c.Name, "utun"), 10, 32)
		if !strings.HasPrefix(c.Name, "utun") || err != nil || n == 1<<32-1 {
			return water.Config{}, fmt.Errorf("tun: invalid Config.Name %q: macOS names utun devices utunN (N a number), or leave it empty for the system to pick one", c.Name)
		}
	}
	return water.Config{DeviceType: water.TUN, PlatformSpecificParams: water.PlatformSpecificParams{Name: c.Name}}, nil
}

func configCommands(name string, c checked) [][]string { return darwinCommands(name, c) }
