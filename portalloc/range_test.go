package portalloc

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPresets(t *testing.T) {
	wantNames := []string{"bsd", "freebsd", "iana", "linux", "linux-old", "windows", "windows-legacy"}
	if diff := cmp.Diff(wantNames, Presets()); diff != "" {
		t.Errorf("Presets() (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		name string
		want Range
		size int
	}{
		{"iana", Range{49152, 65535}, 16384},
		{"windows", Range{49152, 65535}, 16384},
		{"freebsd", Range{49152, 65535}, 16384},
		{"linux", Range{32768, 60999}, 28232},
		{"linux-old", Range{32768, 61000}, 28233},
		{"bsd", Range{1024, 4999}, 3976},
		{"windows-legacy", Range{1025, 5000}, 3976},
		{"IANA", Range{49152, 65535}, 16384},
		{" Linux-Old ", Range{32768, 61000}, 28233},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRange(tc.name)
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tc.name, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseRange(%q) (-want +got):\n%s", tc.name, diff)
			}
			if got.Size() != tc.size {
				t.Errorf("Size() = %d, want %d", got.Size(), tc.size)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate(): %v", err)
			}
		})
	}
}

func TestDefaultRangeIsIANA(t *testing.T) {
	p, err := NewPool(UDP, PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(IANA, p.Range()); diff != "" {
		t.Errorf("default range (-want +got):\n%s", diff)
	}
	if got, _ := Preset("iana"); got != IANA {
		t.Errorf("Preset(iana) = %v, want %v", got, IANA)
	}
	if _, ok := Preset("nope"); ok {
		t.Errorf("Preset(nope) found a range")
	}
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Range
		size int
	}{
		{"single port", "40000", Range{40000, 40000}, 1},
		{"single port as range", "40000-40000", Range{40000, 40000}, 1},
		{"ends at 65535", "65000-65535", Range{65000, 65535}, 536},
		{"only 65535", "65535", Range{65535, 65535}, 1},
		{"whole space", "1-65535", Range{1, 65535}, 65535},
		{"spaces", " 1024 - 2047 ", Range{1024, 2047}, 1024},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRange(tc.in)
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseRange(%q) (-want +got):\n%s", tc.in, diff)
			}
			if got.Size() != tc.size {
				t.Errorf("Size() = %d, want %d", got.Size(), tc.size)
			}
			// String must round-trip through ParseRange.
			back, err := ParseRange(got.String())
			if err != nil || back != got {
				t.Errorf("ParseRange(%q) = %v, %v; want %v", got.String(), back, err, got)
			}
		})
	}
}

func TestParseRangeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		// The error must quote the input and contain rule.
		rule string
	}{
		{"first port zero", "0-5", "first port: 0 is outside 1-65535"},
		{"reversed", "5-1", "first port 5 is greater than last port 1"},
		{"above 65535", "70000", "70000 is outside 1-65535"},
		{"last above 65535", "1-65536", "last port: 65536 is outside 1-65535"},
		{"not numbers", "a-b", `first port: "a" is not a number`},
		{"empty", "", "empty; want FIRST-LAST (1 <= FIRST <= LAST <= 65535) or a preset"},
		{"blank", "  ", "empty"},
		{"missing last", "1-", "last port: missing"},
		{"missing first", "-3", "first port: missing"},
		{"negative", "-3-5", "first port: missing"},
		{"unknown preset", "solaris", `first port: "solaris" is not a number; want FIRST-LAST (1 <= FIRST <= LAST <= 65535) or a preset (bsd, freebsd, iana, linux, linux-old, windows, windows-legacy)`},
		{"three parts", "1-2-3", `last port: "2-3" is not a number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRange(tc.in)
			if err == nil {
				t.Fatalf("ParseRange(%q) = %v, want an error", tc.in, got)
			}
			prefix := `portalloc: invalid port range "` + tc.in + `": `
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}
			if !strings.Contains(err.Error(), tc.rule) {
				t.Errorf("error %q does not name the rule %q", err, tc.rule)
			}
			var r Range
			if err := r.Set(tc.in); err == nil || r != (Range{}) {
				t.Errorf("Set(%q) = %v and left %v; want an error and no change", tc.in, err, r)
			}
		})
	}
}

func TestRangeMethods(t *testing.T) {
	for _, tc := range []struct {
		name      string
		r         Range
		size      int
		validErr  string
		contains  []uint16
		outside   []uint16
		stringOut string
	}{
		{"zero", Range{}, 0, "portalloc: invalid port range 0-0: first port is 0; port 0 is never allocated, so the range must start at 1 or above", nil, []uint16{1}, "0-0"},
		{"reversed", Range{10, 9}, 0, "portalloc: invalid port range 10-9: first port 10 is greater than last port 9", nil, []uint16{9, 10}, "10-9"},
		{"single", Range{7, 7}, 1, "", []uint16{7}, []uint16{6, 8}, "7-7"},
		{"top", Range{65535, 65535}, 1, "", []uint16{65535}, []uint16{65534, 0}, "65535-65535"},
		{"whole", Range{1, 65535}, 65535, "", []uint16{1, 65535}, []uint16{0}, "1-65535"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.Size(); got != tc.size {
				t.Errorf("Size() = %d, want %d", got, tc.size)
			}
			err := tc.r.Validate()
			if got := errString(err); got != tc.validErr {
				t.Errorf("Validate() = %q, want %q", got, tc.validErr)
			}
			for _, p := range tc.contains {
				if !tc.r.Contains(p) {
					t.Errorf("Contains(%d) = false, want true", p)
				}
			}
			for _, p := range tc.outside {
				if tc.r.Contains(p) {
					t.Errorf("Contains(%d) = true, want false", p)
				}
			}
			if got := tc.r.String(); got != tc.stringOut {
				t.Errorf("String() = %q, want %q", got, tc.stringOut)
			}
		})
	}
}

func TestTextMarshalling(t *testing.T) {
	r := Range{1024, 4999}
	b, err := r.MarshalText()
	if err != nil || string(b) != "1024-4999" {
		t.Fatalf("MarshalText() = %q, %v", b, err)
	}
	var back Range
	if err := back.UnmarshalText([]byte("bsd")); err != nil || back != r {
		t.Errorf("UnmarshalText(bsd) = %v, %v; want %v", back, err, r)
	}
	if got := (&back).Type(); got != "range" {
		t.Errorf("Type() = %q", got)
	}

	for _, tc := range []struct {
		in   string
		want Policy
	}{{"sequential", Sequential}, {"Random", Random}, {" hash ", Hash}} {
		var p Policy
		if err := p.UnmarshalText([]byte(tc.in)); err != nil || p != tc.want {
			t.Errorf("Policy.UnmarshalText(%q) = %v, %v; want %v", tc.in, p, err, tc.want)
		}
	}
	var pol Policy
	if err := pol.Set("lottery"); err == nil || err.Error() != `portalloc: unknown policy "lottery"; want one of sequential, random, hash` {
		t.Errorf("Policy.Set(lottery) = %v", err)
	}
	for _, proto := range Protocols {
		b, _ := proto.MarshalText()
		var back Protocol
		if err := back.UnmarshalText(b); err != nil || back != proto {
			t.Errorf("Protocol round trip of %v = %v, %v", proto, back, err)
		}
	}
	if got, err := ParseProtocol(" ICMP "); err != nil || got != ICMP {
		t.Errorf("ParseProtocol(ICMP) = %v, %v; want icmp", got, err)
	}
	if _, err := ParseProtocol("igmp"); err == nil || err.Error() != `portalloc: unknown protocol "igmp"; want tcp, udp, sctp or icmp` {
		t.Errorf("ParseProtocol(igmp) = %v", err)
	}
	if got := Protocol(9).String(); got != "protocol(9)" {
		t.Errorf("Protocol(9).String() = %q", got)
	}
	if got := Policy(9).String(); got != "policy(9)" {
		t.Errorf("Policy(9).String() = %q", got)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
