package wgtun_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/wgtun"
)

const (
	keyA = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	keyB = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
	keyC = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
)

const goodConfig = `
# A wg-quick file.
[Interface]
PrivateKey = ` + keyA + `
Address = 198.18.10.2/24, fd00:10::2/64
address = 198.18.11.2
DNS = 198.18.10.1, corp.example
MTU = 1380
ListenPort = 51820
PostUp = iptables -A FORWARD -j ACCEPT

[Peer]
PublicKey = ` + keyB + `
PresharedKey = ` + keyC + `
AllowedIPs = 198.18.10.0/24, fd00:10::1/64
Endpoint = 127.0.0.1:51821
PersistentKeepalive = 25

[peer]
publickey = ` + keyC + ` # a comment
AllowedIPs = 198.18.12.0/24
`

func TestParseQuickConfig(t *testing.T) {
	c, err := wgtun.ParseQuickConfig("wg0.conf", strings.NewReader(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	want := &wgtun.QuickConfig{
		Interface: wgtun.InterfaceConfig{
			PrivateKey: mustKey(keyA),
			ListenPort: 51820,
			Addresses: []netip.Prefix{
				netip.MustParsePrefix("198.18.10.2/24"),
				netip.MustParsePrefix("fd00:10::2/64"),
				netip.MustParsePrefix("198.18.11.2/32"),
			},
			DNS: []netip.Addr{netip.MustParseAddr("198.18.10.1")},
			MTU: 1380,
		},
		Peers: []wgtun.PeerConfig{{
			PublicKey:           mustKey(keyB),
			PresharedKey:        mustKey(keyC),
			AllowedIPs:          []netip.Prefix{netip.MustParsePrefix("198.18.10.0/24"), netip.MustParsePrefix("fd00:10::/64")},
			Endpoint:            "127.0.0.1:51821",
			PersistentKeepalive: 25,
		}, {
			PublicKey:  mustKey(keyC),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("198.18.12.0/24")},
		}},
		Ignored: []string{
			`wg0.conf:7: DNS search domain "corp.example" is not used`,
			"wg0.conf:10: PostUp is a wg-quick host setting, not used here",
		},
	}
	if diff := cmp.Diff(want, c, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Fatalf("parsed config (-want +got):\n%s", diff)
	}

	dc := c.DeviceConfig()
	if dc.MTU != 1380 || len(dc.Stack.Addrs) != 3 || len(dc.Stack.DNS) != 1 || dc.Stack.DNS[0] != netip.MustParseAddrPort("198.18.10.1:53") {
		t.Errorf("DeviceConfig %+v", dc)
	}
	if got, want := len(dc.Stack.Routes), 3; got != want {
		t.Errorf("DeviceConfig routes %v, want the %d AllowedIPs", dc.Stack.Routes, want)
	}

	uapi, err := c.UAPI(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantUAPI := "private_key=c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669\n" +
		"listen_port=51820\n" +
		"replace_peers=true\n" +
		"public_key=c53201039adba14be71f886da1d8dbe9eebded08cb111b75340078999aa9f038\n" +
		"preshared_key=1c8828f7137324c58b2804928624ea2326f1674537c062e251e2753ca7fcca4c\n" +
		"endpoint=127.0.0.1:51821\n" +
		"persistent_keepalive_interval=25\n" +
		"replace_allowed_ips=true\n" +
		"allowed_ip=198.18.10.0/24\n" +
		"allowed_ip=fd00:10::/64\n" +
		"public_key=1c8828f7137324c58b2804928624ea2326f1674537c062e251e2753ca7fcca4c\n" +
		"persistent_keepalive_interval=0\n" +
		"replace_allowed_ips=true\n" +
		"allowed_ip=198.18.12.0/24\n"
	if diff := cmp.Diff(wantUAPI, uapi); diff != "" {
		t.Errorf("UAPI (-want +got):\n%s", diff)
	}
}

func mustKey(s string) wgtun.Key {
	k, err := wgtun.ParseKey(s)
	if err != nil {
		panic(err)
	}
	return k
}

// Every kind of bad input gets an error with the file, the line, the key
// and what is allowed.
func TestParseQuickConfigErrors(t *testing.T) {
	iface := "[Interface]\nPrivateKey = " + keyA + "\nAddress = 198.18.10.2/24\n"
	peer := "[Peer]\nPublicKey = " + keyB + "\n"
	for _, tc := range []struct {
		name, text, want string
	}{
		{"empty", "", "c.conf: no [Interface] section"},
		{"no peer", iface, "c.conf: no [Peer] section: want at least one"},
		{"key outside", "PrivateKey = " + keyA + "\n", "c.conf:1: PrivateKey outside a section"},
		{"bad section", "[Foo]\n", "c.conf:1: unknown section [Foo]: want [Interface] or [Peer]"},
		{"open section", "[Interface\n", `c.conf:1: section header "[Interface": want [Interface] or [Peer]`},
		{"two interfaces", iface + "[Interface]\n", "c.conf:4: second [Interface] section (the first is on line 1)"},
		{"no equals", "[Interface]\nPrivateKey\n", `c.conf:2: "PrivateKey": want Key = Value`},
		{"short key", "[Interface]\nPrivateKey = abc\n", "c.conf:2: PrivateKey: not a WireGuard key: want 44 characters of base64"},
		{"bad public key", iface + "[Peer]\nPublicKey = " + keyB[:40] + "\n", "c.conf:5: PublicKey: not a WireGuard key"},
		{"bad psk", iface + peer + "PresharedKey = !!\n", "c.conf:6: PresharedKey: not a WireGuard key"},
		{"bad address", "[Interface]\nAddress = 198.18.10.300/24\n", `c.conf:2: Address "198.18.10.300/24": want an IP address with an optional /prefix length`},
		{"bad allowed", iface + peer + "AllowedIPs = 198.18.0.0/33\n", `c.conf:6: AllowedIPs "198.18.0.0/33": want an IP prefix`},
		{"bad endpoint", iface + peer + "Endpoint = 127.0.0.1\n", `c.conf:6: Endpoint "127.0.0.1": want host:port`},
		{"bad endpoint port", iface + peer + "Endpoint = 127.0.0.1:70000\n", `c.conf:6: Endpoint "127.0.0.1:70000": want host:port`},
		{"bad mtu", "[Interface]\nMTU = 9\n", `c.conf:2: MTU "9": want a number from 68 (1280 with IPv6) to 65503`},
		{"bad port", "[Interface]\nListenPort = -1\n", `c.conf:2: ListenPort "-1": want a port number 0-65535`},
		{"bad keepalive", iface + peer + "PersistentKeepalive = soon\n", `c.conf:6: PersistentKeepalive "soon": want seconds 0-65535 or off`},
		{"unknown interface key", "[Interface]\nColour = blue\n", "c.conf:2: unknown key Colour in [Interface]: want PrivateKey, Address, DNS, MTU or ListenPort"},
		{"unknown peer key", iface + peer + "Weight = 3\n", "c.conf:6: unknown key Weight in [Peer]: want PublicKey, PresharedKey, AllowedIPs, Endpoint or PersistentKeepalive"},
		{"no private key", "[Interface]\nAddress = 198.18.10.2/24\n" + peer, "c.conf:1: [Interface] has no PrivateKey"},
		{"no address", "[Interface]\nPrivateKey = " + keyA + "\n" + peer, "c.conf:1: [Interface] has no Address"},
		{"peer without key", iface + "[Peer]\nAllowedIPs = 198.18.0.0/16\n", "c.conf:4: [Peer] has no PublicKey"},
		{"duplicate peer", iface + peer + peer, "c.conf:6: [Peer] has the same PublicKey as the [Peer] on line 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := wgtun.ParseQuickConfig("c.conf", strings.NewReader(tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadQuickConfigMissingFile(t *testing.T) {
	if _, err := wgtun.LoadQuickConfig(t.TempDir() + "/nope.conf"); err == nil || !strings.Contains(err.Error(), "nope.conf") {
		t.Fatalf("error %v; want one naming the file", err)
	}
}
