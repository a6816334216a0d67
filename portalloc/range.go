package portalloc

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Range is an inclusive range of ports, First through Last.
//
// A valid Range has 1 <= First <= Last <= 65535. The zero Range is not
// valid; configuration structs treat it as "use the default" (IANA).
type Range struct {
	First uint16 `json:"first"`
	Last  uint16 `json:"last"`
}

// Well-known ephemeral port ranges.
var (
	// IANA is the dynamic range suggested by IANA and RFC 6335, also used
	// by Windows since Vista and FreeBSD since 4.6. It is the default.
	IANA = Range{49152, 65535}
	// Linux is the default of /proc/sys/net/ipv4/ip_local_port_range.
	Linux = Range{32768, 60999}
	// LinuxOld is the Linux default before kernel 4.x changed it.
	LinuxOld = Range{32768, 61000}
	// BSD is the traditional 4.4BSD range.
	BSD = Range{1024, 4999}
	// WindowsLegacy is the range of Windows through Server 2003.
	WindowsLegacy = Range{1025, 5000}
)

var presets = map[string]Range{
	"iana":           IANA,
	"windows":        IANA,
	"freebsd":        IANA,
	"linux":          Linux,
	"linux-old":      LinuxOld,
	"bsd":            BSD,
	"windows-legacy": WindowsLegacy,
}

// Presets returns the preset names accepted by ParseRange, sorted.
func Presets() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Preset returns the range of a preset name, and whether the name exists.
func Preset(name string) (Range, bool) {
	r, ok := presets[strings.ToLower(name)]
	return r, ok
}

// ParseRange parses "A-B" (inclusive), a single port "A" (a one-port
// range) or a preset name (see Presets). Surrounding spaces are ignored.
// The error quotes the input and says which rule it broke.
func ParseRange(s string) (Range, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return Range{}, fmt.Errorf("portalloc: invalid port range %q: empty; want FIRST-LAST (1 <= FIRST <= LAST <= 65535) or a preset (%s)", s, strings.Join(Presets(), ", "))
	}
	if r, ok := Preset(in); ok {
		return r, nil
	}
	a, b, dash := strings.Cut(in, "-")
	if !dash {
		b = a
	}
	first, err := parsePort(a)
	if err != nil {
		return Range{}, fmt.Errorf("portalloc: invalid port range %q: first port: %v; want FIRST-LAST (1 <= FIRST <= LAST <= 65535) or a preset (%s)", s, err, strings.Join(Presets(), ", "))
	}
	last, err := parsePort(b)
	if err != nil {
		return Range{}, fmt.Errorf("portalloc: invalid port range %q: last port: %v; want FIRST-LAST (1 <= FIRST <= LAST <= 65535)", s, err)
	}
	r := Range{uint16(first), uint16(last)}
	if err := r.check(); err != nil {
		return Range{}, fmt.Errorf("portalloc: invalid port range %q: %v", s, err)
	}
	return r, nil
}

func parsePort(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("missing")
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("%d is outside 1-65535", n)
	}
	return n, nil
}

func (r Range) check() error {
	switch {
	case r.First == 0:
		return fmt.Errorf("first port is 0; port 0 is never allocated, so the range must start at 1 or above")
	case r.First > r.Last:
		return fmt.Errorf("first port %d is greater than last port %d", r.First, r.Last)
	}
	return nil
}

// Validate reports whether r is a usable range: 1 <= First <= Last <= 65535.
func (r Range) Validate() error {
	if err := r.check(); err != nil {
		return fmt.Errorf("portalloc: invalid port range %s: %v", r, err)
	}
	return nil
}

// Size returns the number of ports in r, or 0 if r is invalid.
func (r Range) Size() int {
	if r.check() != nil {
		return 0
	}
	return int(r.Last) - int(r.First) + 1
}

// Contains reports whether port lies within r.
func (r Range) Contains(port uint16) bool { return port >= r.First && port <= r.Last }

// String formats r as "First-Last", which ParseRange accepts.
func (r Range) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// Set implements pflag.Value and flag.Value, so a Range can be a flag.
func (r *Range) Set(s string) error {
	v, err := ParseRange(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Type implements pflag.Value.
func (r *Range) Type() string { return "range" }

// MarshalText implements encoding.TextMarshaler.
func (r Range) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler using ParseRange.
func (r *Range) UnmarshalText(b []byte) error { return r.Set(string(b)) }
