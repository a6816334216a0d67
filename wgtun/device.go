// Package wgtun runs a ustack stack as the "TUN device" of a wireguard-go
// peer, so that a WireGuard client can dial, listen and resolve through
// its tunnel from user space, with no kernel interface and no privileges.
//
// Device implements wireguard-go's tun.Device over a stack.Stack and a
// packetio.Link: packets wireguard-go decrypts are written into the stack,
// packets the stack sends are read by wireguard-go to encrypt. Give the
// Device to device.NewDevice and use Device.Stack as the network:
//
//	tdev, err := wgtun.New(wgtun.Config{Stack: stack.Config{Addrs: addrs}})
//	wg := device.NewDevice(tdev, conn.NewDefaultBind(), logger)
//	wg.IpcSet(uapi) // keys, peers, endpoints
//	wg.Up()
//	c, err := tdev.Stack().DialContext(ctx, "tcp", "10.0.0.1:80")
//
// The package also reads wg-quick configuration files (ParseQuickConfig)
// and turns them into a Config and a wireguard-go UAPI string.
//
// Only this package links wireguard-go: stack, tun and packetio do not
// import it, so programs that do not import wgtun do not carry it.
package wgtun

import (
	"fmt"
	"os"
	"sync"

	"github.com/ustacknet/ustack/packetio"
	"github.com/ustacknet/ustack/stack"
	"golang.zx2c4.com/wireguard/tun"
)

// Defaults and bounds of Config.
const (
	// DefaultMTU is wireguard-go's default MTU (device.DefaultMTU): 1500
	// less the outer IPv6, UDP and WireGuard headers.
	DefaultMTU = 1420
	// MaxMTU is the largest inner packet a WireGuard message can carry
	// (device.MaxContentSize): 65535 less the 32 bytes of WireGuard
	// framing.
	MaxMTU = 65535 - 32
	// DefaultBatchSize is wireguard-go's conn.IdealBatchSize.
	DefaultBatchSize = 128
	// MaxBatchSize bounds Config.BatchSize: wireguard-go preallocates a
	// 64 KiB buffer per packet of a batch, in several places.
	MaxBatchSize = 1024
	// DefaultName is the name the device reports when Config.Name is
	// empty.
	DefaultName = "ustack"
)

// Config configures a Device. Only Stack.Addrs is required.
type Config struct {
	// Stack configures the stack behind the device. Its Addrs are the
	// tunnel addresses (wg-quick's Address), at least one. Link and MTU
	// must be zero: the device provides the link, and its MTU is
	// Config.MTU. Routes default to everything of each family in Addrs;
	// setting them to the peers' AllowedIPs makes dials elsewhere fail at
	// once (QuickConfig.DeviceConfig does that).
	Stack stack.Config

	// MTU is the largest IP packet inside the tunnel. Default DefaultMTU
	// (1420); valid 68 (1280 with an IPv6 address) to MaxMTU.
	MTU int

	// BatchSize is the most packets one Read or Write carries, as
	// reported by BatchSize. Default DefaultBatchSize (128); valid
	// 1-MaxBatchSize.
	BatchSize int

	// QueueLen is the capacity of the queue of packets the stack has sent
	// and wireguard-go has not yet read; see packetio.Config.QueueLen.
	// Default packetio.DefaultQueueLen.
	QueueLen int

	// VerifyChecksums makes the stack verify the TCP and UDP checksums of
	// packets from the tunnel. By default it trusts them, as Linux's
	// WireGuard does: WireGuard's authenticated encryption already
	// guarantees that a packet is the one the peer sent.
	VerifyChecksums bool

	// Name is what Name reports. Default DefaultName.
	Name string
}

// Validate reports the first invalid field of c, naming it and the values
// allowed. The stack's own fields are checked by New, through
// stack.Config.Validate.
func (c *Config) Validate() error {
	if c.Stack.Link != nil {
		return fmt.Errorf("wgtun: Config.Stack.Link must be nil: the device provides the link")
	}
	if c.Stack.MTU != 0 {
		return fmt.Errorf("wgtun: Config.Stack.MTU %d: must be 0; set Config.MTU instead", c.Stack.MTU)
	}
	if len(c.Stack.Addrs) == 0 {
		return fmt.Errorf("wgtun: Config.Stack.Addrs: want at least one tunnel address (wg-quick's Address)")
	}
	if c.MTU != 0 && (c.MTU < packetio.MinMTU || c.MTU > MaxMTU) {
		return fmt.Errorf("wgtun: Config.MTU %d: want 0 (for %d) or %d-%d", c.MTU, DefaultMTU, packetio.MinMTU, MaxMTU)
	}
	if c.BatchSize < 0 || c.BatchSize > MaxBatchSize {
		return fmt.Errorf("wgtun: Config.BatchSize %d: want 0 (for %d) or 1-%d", c.BatchSize, DefaultBatchSize, MaxBatchSize)
	}
	if c.MTU != 0 && c.MTU < 1280 {
		for _, a := range c.Stack.Addrs {
			if a.Addr().Is6() {
				return fmt.Errorf("wgtun: Config.MTU %d: IPv6 needs at least 1280 (Config.Stack.Addrs has %s)", c.MTU, a)
			}
		}
	}
	if c.QueueLen < 0 || c.QueueLen > packetio.MaxQueueLen {
		return fmt.Errorf("wgtun: Config.QueueLen %d: want 0 (for %d) or 1-%d", c.QueueLen, packetio.DefaultQueueLen, packetio.MaxQueueLen)
	}
	return nil
}

// Device is a wireguard-go tun.Device whose other side is a ustack stack.
// Its methods are safe for concurrent use.
type Device struct {
	st     *stack.Stack
	link   *packetio.Link
	events chan tun.Event // EventUp, queued by New; closed by Close
	name   string
	mtu    int
	batch  int

	closeOnce sync.Once
}

var _ tun.Device = (*Device)(nil)

// New builds a Device and its stack from cfg, or returns an error naming
// the invalid field. The device reports tun.EventUp at once, so that a
// wireguard-go device built on it comes up when configured.
func New(cfg Config) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Device{
		events: make(chan tun.Event, 1),
		name:   cfg.Name,
		mtu:    cfg.MTU,
		batch:  cfg.BatchSize,
	}
	if d.name == "" {
		d.name = DefaultName
	}
	if d.mtu == 0 {
		d.mtu = DefaultMTU
	}
	if d.batch == 0 {
		d.batch = DefaultBatchSize
	}
	link, err := packetio.New(packetio.Config{MTU: d.mtu, QueueLen: cfg.QueueLen, TrustChecksums: !cfg.VerifyChecksums})
	if err != nil {
		return nil, fmt.Errorf("wgtun: %w", err)
	}
	scfg := cfg.Stack
	scfg.Link = link.LinkEndpoint()
	st, err := stack.New(scfg)
	if err != nil {
		link.Close()
		return nil, fmt.Errorf("wgtun: Config.Stack: %w", err)
	}
	d.st, d.link = st, link
	d.events <- tun.EventUp
	return d, nil
}

// Stack returns the device's stack: dial, listen and resolve through the
// tunnel with it. It is closed by Close.
func (d *Device) Stack() *stack.Stack { return d.st }

// LinkStats returns the counters of the link between the stack and
// wireguard-go.
func (d *Device) LinkStats() packetio.Stats { return d.link.Stats() }

// File implements tun.Device. There is no file: it returns nil.
func (d *Device) File() *os.File { return nil }

// Read implements tun.Device: it blocks until the stack has sent at least
// one packet, then copies up to len(bufs) of them into bufs[i][offset:]
// and their lengths into sizes[i]. The buffers must hold MTU bytes after
// offset; a longer packet is dropped. After Close it returns an error
// matching os.ErrClosed, which wireguard-go takes as the device going
// away.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return d.link.ReadPackets(bufs, sizes, offset)
}

// Write implements tun.Device: bufs[i][offset:] is a decrypted IP packet,
// delivered to the stack before Write returns (the buffers may be reused
// then). After Close it returns an error matching os.ErrClosed.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	return d.link.WritePackets(bufs, offset)
}

// MTU implements tun.Device. It never changes.
func (d *Device) MTU() (int, error) { return d.mtu, nil }

// Name implements tun.Device.
func (d *Device) Name() (string, error) { return d.name, nil }

// Events implements tun.Device. It delivers tun.EventUp once, and is
// closed by Close.
func (d *Device) Events() <-chan tun.Event { return d.events }

// BatchSize implements tun.Device.
func (d *Device) BatchSize() int { return d.batch }

// Close implements tun.Device: it closes the link, which ends blocked
// Reads and Writes, then closes the stack, which ends every connection,
// listener and packet conn of Stack with net.ErrClosed, releases their
// ports and waits for the stack's goroutines, and finally closes the
// Events channel. wireguard-go's device.Close calls it; it is idempotent
// and returns nil.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.link.Close()
		d.st.Close()
		close(d.events)
	})
	return nil
}
