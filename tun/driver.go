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
	// DriverWater elsewhere.
	DriverDefault Driver = ""
	// DriverKernel opens /dev/net/tun with this package's own code: the
	// offloads, multi-queue, IFF_TUN_EXCL and network namespaces (see the
	// package doc). Linux only.
	DriverKernel Driver = "kernel"
	// DriverWater opens the device with github.com/songgao/water: macOS
	// utun, Windows TAP-Windows (tap0901) and Linux /dev/net/tun, one
	// queue, no offloads (see the package doc, "The water driver").
	DriverWater Driver = "water"
)

// Drivers returns the drivers this system has, the default first.
func Drivers() []Driver {
	if runtime.GOOS == "linux" {
		return []Driver{DriverKernel, DriverWater}
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

func driverList() string {
	var names []string
	for _, d := range Drivers() {
		names = append(names, string(d))
	}
	return strings.Join(names, " or ")
}

// resolve returns the driver d stands for on this system, or an error
// naming Config.Driver.
func (d Driver) resolve() (Driver, error) {
	if d == DriverDefault {
		return Drivers()[0], nil
	}
	for _, ok := range Drivers() {
		if d == ok {
			return d, nil
		}
	}
	if d == DriverKernel {
		return "", fmt.Errorf("tun: invalid Config.Driver %q: it is Linux-only; on %s use %s", d, runtime.GOOS, driverList())
	}
	return "", fmt.Errorf("tun: invalid Config.Driver %q: want %s, or empty for the default", d, driverList())
}
