package wgtun

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Key is a WireGuard key: a Curve25519 private or public key, or a
// preshared key. Its text form is 44 characters of standard base64, as
// `wg genkey` prints.
type Key [32]byte

// ParseKey parses the base64 text form of a key.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("not a WireGuard key: want 44 characters of base64 encoding 32 bytes, as `wg genkey` prints")
	}
	copy(k[:], b)
	return k, nil
}

// String returns the key in base64.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether k is all zeros (unset).
func (k Key) IsZero() bool { return k == Key{} }

// QuickConfig is a wg-quick configuration file: one [Interface] section
// and one or more [Peer] sections.
type QuickConfig struct {
	Interface InterfaceConfig
	Peers     []PeerConfig
	// Ignored lists, by line, the settings that only make sense to
	// wg-quick on a host (Table, PreUp, PostUp, PreDown, PostDown,
	// SaveConfig, FwMark) and DNS search domains, which ParseQuickConfig
	// accepts but does not use. Show them to the user.
	Ignored []string
}

// InterfaceConfig is the [Interface] section.
type InterfaceConfig struct {
	PrivateKey Key            // required
	ListenPort uint16         // 0: any free port
	Addresses  []netip.Prefix // Address; required; a bare address means /32 or /128
	DNS        []netip.Addr   // DNS servers (addresses only)
	MTU        int            // 0: DefaultMTU
}

// PeerConfig is a [Peer] section.
type PeerConfig struct {
	PublicKey           Key // required
	PresharedKey        Key // zero: none
	AllowedIPs          []netip.Prefix
	Endpoint            string // host:port; empty: wait for the peer to reach us
	PersistentKeepalive int    // seconds; 0: off
}

// wgQuickOnly are wg-quick settings about the host, which a user-space
// peer has no use for.
var wgQuickOnly = map[string]bool{"table": true, "preup": true, "postup": true, "predown": true, "postdown": true, "saveconfig": true, "fwmark": true}

// LoadQuickConfig reads and parses the wg-quick configuration file at
// path.
func LoadQuickConfig(path string) (*QuickConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseQuickConfig(path, f)
}

// ParseQuickConfig parses a wg-quick configuration from r; name (such as
// the file name) starts every error message, which also gives the line
// and the key that is wrong and what is allowed. Keys and section names
// are case-insensitive, as wg(8) has them; '#' starts a comment.
func ParseQuickConfig(name string, r io.Reader) (*QuickConfig, error) {
	p := quickParser{name: name}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p.line++
		if err := p.parseLine(sc.Text()); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p.finish()
}

type quickParser struct {
	name    string
	line    int
	section string // "", "interface" or "peer"
	seenIf  bool
	ifLine  int // line of [Interface]
	cfg     QuickConfig
	peer    *PeerConfig
	peerAt  []int // line of each [Peer]
}

func (p *quickParser) errorf(format string, args ...any) error {
	return fmt.Errorf("%s:%d: "+format, append([]any{p.name, p.line}, args...)...)
}

func (p *quickParser) parseLine(text string) error {
	if i := strings.IndexByte(text, '#'); i >= 0 {
		text = text[:i]
	}
	text = strings.TrimSpace(text)
	if text == "" {
		return nil
	}
	if strings.HasPrefix(text, "[") {
		if !strings.HasSuffix(text, "]") {
			return p.errorf("section header %q: want [Interface] or [Peer]", text)
		}
		switch strings.ToLower(strings.TrimSpace(text[1 : len(text)-1])) {
		case "interface":
			if p.seenIf {
				return p.errorf("second [Interface] section (the first is on line %d): want exactly one", p.ifLine)
			}
			p.seenIf, p.ifLine, p.section = true, p.line, "interface"
		case "peer":
			p.cfg.Peers = append(p.cfg.Peers, PeerConfig{})
			p.peer = &p.cfg.Peers[len(p.cfg.Peers)-1]
			p.peerAt = append(p.peerAt, p.line)
			p.section = "peer"
		default:
			return p.errorf("unknown section %s: want [Interface] or [Peer]", text)
		}
		return nil
	}
	key, value, ok := strings.Cut(text, "=")
	if !ok {
		return p.errorf("%q: want Key = Value, a [Section] header or a # comment", text)
	}
	key, value = strings.TrimSpace(key), strings.TrimSpace(value)
	lkey := strings.ToLower(key)
	switch p.section {
	case "":
		return p.errorf("%s outside a section: put it under [Interface] or [Peer]", key)
	case "interface":
		return p.interfaceKey(key, lkey, value)
	default:
		return p.peerKey(key, lkey, value)
	}
}

func (p *quickParser) interfaceKey(key, lkey, value string) error {
	ifc := &p.cfg.Interface
	switch lkey {
	case "privatekey":
		k, err := ParseKey(value)
		if err != nil {
			return p.errorf("PrivateKey: %v", err)
		}
		ifc.PrivateKey = k
	case "listenport":
		n, err := strconv.ParseUint(value, 10, 16)
		if err != nil {
			return p.errorf("ListenPort %q: want a port number 0-65535", value)
		}
		ifc.ListenPort = uint16(n)
	case "address":
		for _, s := range splitList(value) {
			pfx, err := parsePrefixOrAddr(s)
			if err != nil {
				return p.errorf("Address %q: want an IP address with an optional /prefix length, such as 10.0.0.2/32 or fd00::2/128", s)
			}
			ifc.Addresses = append(ifc.Addresses, pfx)
		}
	case "dns":
		for _, s := range splitList(value) {
			a, err := netip.ParseAddr(s)
			if err != nil {
				p.cfg.Ignored = append(p.cfg.Ignored, fmt.Sprintf("%s:%d: DNS search domain %q is not used", p.name, p.line, s))
				continue
			}
			ifc.DNS = append(ifc.DNS, a.Unmap())
		}
	case "mtu":
		n, err := strconv.Atoi(value)
		if err != nil || n < 68 || n > MaxMTU {
			return p.errorf("MTU %q: want a number from 68 (1280 with IPv6) to %d", value, MaxMTU)
		}
		ifc.MTU = n
	default:
		if wgQuickOnly[lkey] {
			p.cfg.Ignored = append(p.cfg.Ignored, fmt.Sprintf("%s:%d: %s is a wg-quick host setting, not used here", p.name, p.line, key))
			return nil
		}
		return p.errorf("unknown key %s in [Interface]: want PrivateKey, Address, DNS, MTU or ListenPort", key)
	}
	return nil
}

func (p *quickParser) peerKey(key, lkey, value string) error {
	peer := p.peer
	switch lkey {
	case "publickey":
		k, err := ParseKey(value)
		if err != nil {
			return p.errorf("PublicKey: %v", err)
		}
		peer.PublicKey = k
	case "presharedkey":
		k, err := ParseKey(value)
		if err != nil {
			return p.errorf("PresharedKey: %v", err)
		}
		peer.PresharedKey = k
	case "allowedips":
		for _, s := range splitList(value) {
			pfx, err := parsePrefixOrAddr(s)
			if err != nil {
				return p.errorf("AllowedIPs %q: want an IP prefix such as 0.0.0.0/0, 10.0.0.0/24 or fd00::/64", s)
			}
			peer.AllowedIPs = append(peer.AllowedIPs, pfx.Masked())
		}
	case "endpoint":
		host, port, err := net.SplitHostPort(value)
		if err == nil {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err != nil || host == "" {
			return p.errorf("Endpoint %q: want host:port, such as 192.0.2.1:51820, [2001:db8::1]:51820 or vpn.example.com:51820", value)
		}
		peer.Endpoint = value
	case "persistentkeepalive":
		if strings.EqualFold(value, "off") {
			peer.PersistentKeepalive = 0
			return nil
		}
		n, err := strconv.ParseUint(value, 10, 16)
		if err != nil {
			return p.errorf("PersistentKeepalive %q: want seconds 0-65535 or off", value)
		}
		peer.PersistentKeepalive = int(n)
	default:
		return p.errorf("unknown key %s in [Peer]: want PublicKey, PresharedKey, AllowedIPs, Endpoint or PersistentKeepalive", key)
	}
	return nil
}

func (p *quickParser) finish() (*QuickConfig, error) {
	c := &p.cfg
	switch {
	case !p.seenIf:
		return nil, fmt.Errorf("%s: no [Interface] section: want one, with PrivateKey and Address", p.name)
	case c.Interface.PrivateKey.IsZero():
		return nil, fmt.Errorf("%s:%d: [Interface] has no PrivateKey: want one, as `wg genkey` prints", p.name, p.ifLine)
	case len(c.Interface.Addresses) == 0:
		return nil, fmt.Errorf("%s:%d: [Interface] has no Address: want the tunnel address(es), such as Address = 10.0.0.2/32", p.name, p.ifLine)
	case len(c.Peers) == 0:
		return nil, fmt.Errorf("%s: no [Peer] section: want at least one", p.name)
	}
	seen := map[Key]int{}
	for i, peer := range c.Peers {
		if peer.PublicKey.IsZero() {
			return nil, fmt.Errorf("%s:%d: [Peer] has no PublicKey: want the peer's public key", p.name, p.peerAt[i])
		}
		if j, dup := seen[peer.PublicKey]; dup {
			return nil, fmt.Errorf("%s:%d: [Peer] has the same PublicKey as the [Peer] on line %d", p.name, p.peerAt[i], p.peerAt[j])
		}
		seen[peer.PublicKey] = i
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// DeviceConfig returns the Config for New that the [Interface] section
// describes: its addresses, DNS servers and MTU, with routes limited to
// the peers' AllowedIPs so that dials outside them fail at once.
func (c *QuickConfig) DeviceConfig() Config {
	var cfg Config
	cfg.Stack.Addrs = c.Interface.Addresses
	for _, a := range c.Interface.DNS {
		cfg.Stack.DNS = append(cfg.Stack.DNS, netip.AddrPortFrom(a, 53))
	}
	seen := map[netip.Prefix]bool{}
	for _, p := range c.Peers {
		for _, r := range p.AllowedIPs {
			if !seen[r] {
				seen[r] = true
				cfg.Stack.Routes = append(cfg.Stack.Routes, r)
			}
		}
	}
	cfg.MTU = c.Interface.MTU
	return cfg
}

// UAPI returns the configuration in wireguard-go's UAPI text form, for
// device.IpcSet. It replaces any peers the device had. Endpoints given
// by host name are resolved here, with the host's resolver (not through
// the tunnel); an error names the peer and the endpoint.
func (c *QuickConfig) UAPI(ctx context.Context) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\n", hex.EncodeToString(c.Interface.PrivateKey[:]))
	if c.Interface.ListenPort != 0 {
		fmt.Fprintf(&b, "listen_port=%d\n", c.Interface.ListenPort)
	}
	b.WriteString("replace_peers=true\n")
	for i, p := range c.Peers {
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		if !p.PresharedKey.IsZero() {
			fmt.Fprintf(&b, "preshared_key=%s\n", hex.EncodeToString(p.PresharedKey[:]))
		}
		if p.Endpoint != "" {
			ep, err := resolveEndpoint(ctx, p.Endpoint)
			if err != nil {
				return "", fmt.Errorf("wgtun: [Peer] %d (%s): Endpoint %s: %w", i+1, p.PublicKey, p.Endpoint, err)
			}
			fmt.Fprintf(&b, "endpoint=%s\n", ep)
		}
		fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", p.PersistentKeepalive)
		b.WriteString("replace_allowed_ips=true\n")
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	return b.String(), nil
}

func resolveEndpoint(ctx context.Context, hostport string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: want 0-65535", portStr)
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("%s has no address", host)
	}
	// Prefer IPv4, as wg(8) does.
	best := addrs[0].Unmap()
	for _, a := range addrs {
		if a.Unmap().Is4() {
			best = a.Unmap()
			break
		}
	}
	return netip.AddrPortFrom(best, uint16(port)), nil
}
