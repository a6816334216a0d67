//go:build !linux && !freebsd

package tun

import "fmt"

// openFreeBSD is never reached here: Config.check refuses DriverFreeBSD
// off FreeBSD.
func openFreeBSD(checked) (*Device, error) {
	return nil, fmt.Errorf("tun: invalid Config.Driver %q: it is FreeBSD-only", DriverFreeBSD)
}
