package tun

import (
	"fmt"
	"runtime"
	"strings"
)

// Driver chooses how Open makes the device.
type Driver string

const (
	// DriverDefault is the system's default: DriverKernel on Linux,
	// DriverFreeBSD on FreeBSD, DriverWater elsewhere.
	DriverDefault Driver = ""
	// DriverKernel opens /dev/net/tun with this package's own code: the
	// offloads, multi-queue, IFF_TUN_EXCL and network namespaces (see the
	// package doc). Linux only.
	DriverKernel Driver = "kernel"
	// DriverWater opens the device with github.com/songgao/water: macOS
	// utun, Windows TAP-Windows (tap0901) and Linux /dev/net/tun, one
	// queue, no offloads (see the package doc, "The water driver").
	DriverWater Driver = "water"
	// DriverFreeBSD opens FreeBSD's tun(4) with this package's own code
	// (songgao/water has no FreeBSD support): one queue, no offloads, IPv4
	// and IPv6 (see the package doc, "The FreeBSD driver"). FreeBSD only.
	DriverFreeBSD Driver = "freebsd"
)

// Drivers returns the drivers this system has, the default first.
func Drivers() []Driver { return driversOn(runtime.GOOS) }

// driversOn returns the drivers of system goos (a GOOS value), the default
// first.
func driversOn(goos string) []Driver {
	switch goos {
	case "linux":
		return []Driver{DriverKernel, DriverWater}
	case "freebsd":
		return []Driver{DriverFreeBSD}
	}
	return []Driver{DriverWater}
}

// ParseDriver parses a driver name; the error names the allowed values.
func ParseDriver(s string) (Driver, error) {
	for _, d := range Drivers() {
		if string(d) == s {
			return d, nil
		}
	}
	return "", fmt.Errorf("unknown driver %q: want %s", s, driverList())
}

func driverList() string { return driverListOn(runtime.GOOS) }

func driverListOn(goos string) string {
	var names []string
	for _, d := range driversOn(goos) {
		names = append(names, string(d))
	}
	return strings.Join(names, " or ")
}

// resolve returns the driver d stands for on this system, or an error
// naming Config.Driver.
func (d Driver) resolve() (Driver, error) { return d.resolveOn(runtime.GOOS) }

// resolveOn is resolve on system goos.
func (d Driver) resolveOn(goos string) (Driver, error) {
	drivers := driversOn(goos)
	if d == DriverDefault {
		return drivers[0], nil
	}
	for _, ok := range drivers {
		if d == ok {
			return d, nil
		}
	}
	switch d {
	case DriverKernel:
		return "", fmt.Errorf("tun: invalid Config.Driver %q: it is Linux-only; on %s use %s", d, goos, driverListOn(goos))
	case DriverFreeBSD:
		return "", fmt.Errorf("tun: invalid Config.Driver %q: it is FreeBSD-only; on %s use %s", d, goos, driverListOn(goos))
	case DriverWater:
		return "", fmt.Errorf("tun: invalid Config.Driver %q: songgao/water has no %s support; use %s", d, goos, driverListOn(goos))
	}
	return "", fmt.Errorf("tun: invalid Config.Driver %q: want %s, or empty for the default", d, driverListOn(goos))
}
