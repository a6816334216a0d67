package portfwd

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Forward
		err  string
	}{
		{"8080:80", Forward{"tcp", netip.MustParseAddrPort("127.0.0.1:8080"), 80}, ""},
		{" 0.0.0.0:5353:53/UDP ", Forward{"udp", netip.MustParseAddrPort("0.0.0.0:5353"), 53}, ""},
		{"[::1]:8080:80/tcp", Forward{"tcp", netip.MustParseAddrPort("[::1]:8080"), 80}, ""},
		{"[::ffff:10.0.0.1]:1:65535", Forward{"tcp", netip.MustParseAddrPort("10.0.0.1:1"), 65535}, ""},
		{"", Forward{}, `invalid port forward "": want two or three fields separated by ':'; want [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp], such as 8080:80 or 127.0.0.1:5353:53/udp`},
		{"8080", Forward{}, "want two or three fields"},
		{"1:2:3:4", Forward{}, "want two or three fields"},
		{"8080:80/sctp", Forward{}, `protocol "sctp" is not tcp or udp`},
		{"x:8080:80", Forward{}, `host address "x" is not an IP address`},
		{"8080:0", Forward{}, "guest port 0 is outside 1-65535"},
		{"70000:80", Forward{}, "host port 70000 is outside 1-65535"},
		{"http:80", Forward{}, `host port "http" is not a number`},
		{"[::1:8080:80", Forward{}, "missing ] after the IPv6 address"},
		{"[::1]:8080", Forward{}, "want HOSTPORT:GUESTPORT after the address"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Parse(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
				}
				if !strings.Contains(err.Error(), Syntax) {
					t.Errorf("Parse(%q) error %q does not give the syntax", tc.in, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			// String is a spec that Parse reads back.
			if again, err := Parse(got.String()); err != nil || again != got {
				t.Errorf("Parse(%q) = %v, %v; want %v", got.String(), again, err, got)
			}
		})
	}
}
