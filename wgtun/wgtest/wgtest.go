// Package wgtest builds WireGuard tunnels between two wireguard-go devices
// on the loopback interface, for tests and benchmarks: it generates the
// keys, brings both devices up on free UDP ports and makes each the
// other's only peer, with its endpoint on 127.0.0.1.
//
// The devices' sockets are wireguard-go's default bind, which listens on
// the wildcard address; the tunnel's traffic only ever goes to 127.0.0.1.
package wgtest

import (
	"bufio"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ustacknet/ustack/wgtun"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

// NewKeyPair returns a fresh Curve25519 key pair.
func NewKeyPair() (priv, pub wgtun.Key, err error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return priv, pub, err
	}
	copy(priv[:], k.Bytes())
	copy(pub[:], k.PublicKey().Bytes())
	return priv, pub, nil
}

// Quiet is a wireguard-go logger that discards everything.
var Quiet = &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}

// Side is one end of a tunnel: a TUN device and the tunnel addresses
// behind it, which the other side routes to it (its AllowedIPs).
type Side struct {
	TUN   tun.Device
	Addrs []netip.Prefix
}

// Tunnel is two wireguard-go devices peered over 127.0.0.1.
type Tunnel struct {
	A, B   *device.Device
	PortA  uint16 // A's UDP port
	PortB  uint16 // B's UDP port
	PubA   wgtun.Key
	PubB   wgtun.Key
	closed bool
}

// New builds a device on each side, with a logger of log (nil: Quiet),
// and peers them. The devices' own sockets are opened by the calling
// goroutine's thread, so call New from the network namespace the sockets
// must live in. Close closes both devices, which closes their TUNs.
func New(a, b Side, log *device.Logger) (*Tunnel, error) {
	if log == nil {
		log = Quiet
	}
	privA, pubA, err := NewKeyPair()
	if err != nil {
		return nil, err
	}
	privB, pubB, err := NewKeyPair()
	if err != nil {
		return nil, err
	}
	t := &Tunnel{PubA: pubA, PubB: pubB}
	t.A = device.NewDevice(a.TUN, conn.NewDefaultBind(), log)
	t.B = device.NewDevice(b.TUN, conn.NewDefaultBind(), log)
	fail := func(err error) (*Tunnel, error) {
		t.Close()
		return nil, err
	}
	if t.PortA, err = up(t.A, privA); err != nil {
		return fail(fmt.Errorf("wgtest: side A: %w", err))
	}
	if t.PortB, err = up(t.B, privB); err != nil {
		return fail(fmt.Errorf("wgtest: side B: %w", err))
	}
	if err := t.A.IpcSet(peer(pubB, t.PortB, b.Addrs)); err != nil {
		return fail(fmt.Errorf("wgtest: side A's peer: %w", err))
	}
	if err := t.B.IpcSet(peer(pubA, t.PortA, a.Addrs)); err != nil {
		return fail(fmt.Errorf("wgtest: side B's peer: %w", err))
	}
	return t, nil
}

// up sets the private key, brings dev up on a free port and returns it.
func up(dev *device.Device, priv wgtun.Key) (uint16, error) {
	if err := dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(priv[:]))); err != nil {
		return 0, err
	}
	if err := dev.Up(); err != nil {
		return 0, err
	}
	return ListenPort(dev)
}

// peer is the UAPI text adding the peer pub at 127.0.0.1:port, routing
// addrs to it.
func peer(pub wgtun.Key, port uint16, addrs []netip.Prefix) string {
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\nendpoint=127.0.0.1:%d\nreplace_allowed_ips=true\n", hex.EncodeToString(pub[:]), port)
	for _, a := range addrs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", netip.PrefixFrom(a.Addr(), a.Addr().BitLen()))
	}
	return b.String()
}

// ListenPort returns the UDP port dev listens on.
func ListenPort(dev *device.Device) (uint16, error) {
	s, err := dev.IpcGet()
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "listen_port="); ok {
			n, err := strconv.ParseUint(v, 10, 16)
			return uint16(n), err
		}
	}
	return 0, fmt.Errorf("wgtest: device reports no listen_port")
}

// Close closes both devices (and so their TUNs). It is idempotent.
func (t *Tunnel) Close() {
	if t.closed {
		return
	}
	t.closed = true
	if t.A != nil {
		t.A.Close()
	}
	if t.B != nil {
		t.B.Close()
	}
}
