//go:build linux

package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestBadUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "-netns is required"},
		{[]string{"-netns", "/x", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"-netns", "/x", "-addr", "198.18.0.1"}, `-addr "198.18.0.1": want an address with prefix length`},
		{[]string{"-netns", "/x", "-guest-addr", "nope"}, `-guest-addr "nope"`},
		{[]string{"-netns", "/x", "-idle", "0s"}, "-idle 0s: want a positive duration"},
		{[]string{"-netns", "/nonexistent/ns"}, "-netns: open /nonexistent/ns: no such file or directory"},
		{[]string{"-bogus"}, "flag provided but not defined: -bogus"},
	} {
		var out bytes.Buffer
		if code := run(tc.args, &out, &out); code != 2 || !strings.Contains(out.String(), tc.want) {
			t.Errorf("tproxy %q: exit %d, output %q; want 2 and %q", tc.args, code, out.String(), tc.want)
		}
	}
}
