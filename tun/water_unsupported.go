//go:build !linux && !darwin && !windows

package tun

import (
	"fmt"
	"runtime"

	"github.com/songgao/water"
)

// waterHint is appended to water's errors.
const waterHint = ""

// waterConfig refuses at once: songgao/water (v0.0.0-20200317203138,
// its latest) implements Linux, macOS and Windows only, and answers "not
// implemented on this platform" elsewhere, FreeBSD included.
func waterConfig(checked) (water.Config, error) {
	return water.Config{}, fmt.Errorf("tun: the water driver has no %s support: songgao/water implements TUN devices on Linux, macOS and Windows only", runtime.GOOS)
}

func configCommands(string, checked) [][]string { return nil }
