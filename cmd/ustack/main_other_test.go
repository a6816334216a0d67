//go:build !linux

package main

import (
	"strings"
	"testing"
)

func TestLinuxOnlyCommandsFail(t *testing.T) {
	for _, args := range [][]string{
		{"sandbox", "--", "true"},
		{"slirp4netns", "--configure", "1", "tap0"},
		{"forward", "list"},
		{"demo", "--tun"},
	} {
		t.Run(args[0], func(t *testing.T) {
			_, err := run(args...)
			if err == nil || !strings.Contains(err.Error(), "needs Linux") {
				t.Errorf("ustack %v: %v, want a 'needs Linux' error", args, err)
			}
		})
	}
}
