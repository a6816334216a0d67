package stack

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
)

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// TestAddressesAtRunTime changes an IPv4-only stack's addresses and
// routes: the families follow, and bad input is refused naming what is
// wrong.
func TestAddressesAtRunTime(t *testing.T) {
	st, err := New(Config{Link: channel.New(8, 1500, ""), Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.2/24")}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v6 := netip.MustParseAddrPort("[fd00:18::1]:80")
	if _, err := st.DialTCPAddrPort(t.Context(), netip.AddrPort{}, v6); !errors.Is(err, syscall.ENETUNREACH) {
		t.Fatalf("IPv6 dial from an IPv4-only stack = %v, want ENETUNREACH", err)
	}
	if err := st.AddAddress(netip.MustParsePrefix("fd00:18::2/64")); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"198.18.0.2/24", "fd00:18::2/64"}, prefixStrings(st.Addresses())); diff != "" {
		t.Errorf("Addresses (-want +got):\n%s", diff)
	}
	// The new family can be used at once.
	if _, err := st.ListenPacket("udp6", "[fd00:18::2]:0"); err != nil {
		t.Errorf("listen on the added address: %v", err)
	}
	if err := st.SetRoutes([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("fd00:18::/64")}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"fd00:18::/64", "0.0.0.0/0"}, prefixStrings(st.Routes())); diff != "" {
		t.Errorf("Routes (-want +got):\n%s", diff)
	}
	if err := st.RemoveAddress(netip.MustParseAddr("198.18.0.2")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DialUDPAddrPort(netip.AddrPort{}, netip.MustParseAddrPort("198.18.0.1:53")); !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("IPv4 dial after the last IPv4 address went = %v, want ENETUNREACH", err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"add invalid", st.AddAddress(netip.Prefix{}), "AddAddress invalid Prefix: invalid prefix; want an address with its prefix length"},
		{"add mapped", st.AddAddress(netip.MustParsePrefix("::ffff:198.18.0.9/128")), "IPv4-mapped IPv6 address; give the IPv4 address instead"},
		{"add unspecified", st.AddAddress(netip.MustParsePrefix("0.0.0.0/0")), "want a unicast address"},
		{"remove invalid", st.RemoveAddress(netip.Addr{}), "RemoveAddress: invalid address"},
		{"remove unknown", st.RemoveAddress(netip.MustParseAddr("198.18.0.2")), "RemoveAddress 198.18.0.2: not an address of the stack (it has [fd00:18::2/64])"},
		{"route invalid", st.SetRoutes([]netip.Prefix{{}}), "SetRoutes: routes[0]: invalid prefix"},
		{"route mapped", st.SetRoutes([]netip.Prefix{netip.MustParsePrefix("::ffff:0.0.0.0/96")}), "IPv4-mapped prefix"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, tc.err, tc.want)
		}
	}
	st.Close()
	if err := st.AddAddress(netip.MustParsePrefix("198.18.0.3/24")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("AddAddress after Close = %v, want net.ErrClosed", err)
	}
	if err := st.SetRoutes(nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetRoutes after Close = %v, want net.ErrClosed", err)
	}
}

// TestRemoveAddressSockets checks that UDP and ping sockets using a
// removed address fail to send with ENETUNREACH, as Linux's do, whether
// they were dialled (the address is the route's source) or bound to it,
// and that a socket on another address still sends.
func TestRemoveAddressSockets(t *testing.T) {
	client, _ := dualInterceptPair(t)
	if err := client.AddAddress(netip.MustParsePrefix("198.18.0.3/24")); err != nil {
		t.Fatal(err)
	}
	peer := netip.MustParseAddrPort("198.18.0.1:53")
	dialled, err := client.DialUDPAddrPort(netip.AddrPort{}, peer)
	if err != nil {
		t.Fatal(err)
	}
	defer dialled.Close()
	if got := dialled.LocalAddr().(*net.UDPAddr).AddrPort().Addr(); got != netip.MustParseAddr("198.18.0.2") {
		t.Fatalf("dialled from %v, want the first address 198.18.0.2", got)
	}
	bound, err := client.ListenUDPAddrPort(netip.MustParseAddrPort("198.18.0.2:5000"))
	if err != nil {
		t.Fatal(err)
	}
	defer bound.Close()
	other, err := client.ListenUDPAddrPort(netip.MustParseAddrPort("198.18.0.3:5000"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ping, err := client.DialPingAddr(netip.Addr{}, peer.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer ping.Close()
	pingBound, err := client.ListenPingAddr("ping4", netip.MustParseAddr("198.18.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	defer pingBound.Close()
	if err := client.RemoveAddress(netip.MustParseAddr("198.18.0.2")); err != nil {
		t.Fatal(err)
	}
	for name, send := range map[string]func() error{
		"dialled UDP":  func() error { _, err := dialled.Write([]byte("x")); return err },
		"bound UDP":    func() error { _, err := bound.WriteToUDPAddrPort([]byte("x"), peer); return err },
		"dialled ping": func() error { _, err := ping.Write(echoRequest(t, "ping4", 1, nil)); return err },
		"bound ping": func() error {
			_, err := pingBound.WriteToAddr(echoRequest(t, "ping4", 1, nil), peer.Addr())
			return err
		},
	} {
		if err := send(); !errors.Is(err, syscall.ENETUNREACH) {
			t.Errorf("%s: send after its address went = %v, want ENETUNREACH", name, err)
		}
	}
	if _, err := other.WriteToUDPAddrPort([]byte("x"), peer); err != nil {
		t.Errorf("send from the remaining address: %v", err)
	}
}
