//go:build linux

package sandbox

import (
	"io"
	"net/netip"

	"github.com/ustacknet/ustack/internal/nsexec"
	"github.com/ustacknet/ustack/tun"
)

// DefaultIfName is the sandbox's interface name.
const DefaultIfName = "ustack0"

// DefaultTxQueueLen is the transmit queue of the guest's interface, in
// packets: what the guest sends waits there until the gateway reads it,
// and what does not fit is dropped. The kernel's default for a TUN
// device, 500, is too short for a burst: a guest that opens 3,000 UDP
// flows back to back sends them in about 20 ms, while the gateway, on a
// loaded machine, can wait that long for a CPU (and each new flow costs it
// more than one datagram of an existing flow does). 4096 holds such a
// burst, and matches the gateway's hand-off queue behind the reader
// (tun), so what the queue holds the gateway can take in at once. The
// cost is the guest's: a packet in the queue keeps its buffer, charged to
// the sending socket, whose send buffer bounds it (and TCP's small-queue
// limit keeps a TCP flow's share to about 1 MiB whatever the queue).
const DefaultTxQueueLen = 4096

// Options configures Run and Attach.
type Options struct {
	// Gateway configures the host side; Run sets its Link.
	Gateway Config
	// MTU of the sandbox's interface, 1280-65520. Default 65520.
	MTU int
	// IfName is the interface name inside the sandbox. Default ustack0.
	IfName string
	// TxQueueLen is the guest interface's transmit queue, in packets
	// (tun.Config.TxQueueLen), 1 to tun.MaxTxQueueLen. Default
	// DefaultTxQueueLen. A TAP device that Attach finds made beforehand
	// keeps its own.
	TxQueueLen int
	// Forwards are added before the command starts.
	Forwards []Forward
	// Command and its arguments, run inside the sandbox.
	Command []string
	// Stdin, Stdout and Stderr of the command. Nil means os.Stdin etc.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Self is the path of a binary whose main function calls Init when
	// IsInit reports true (before anything else). Default: /proc/self/exe.
	Self string
	// Ready, if set, is called with the running Gateway and its TUN
	// device before the command starts (the CLI serves its API and
	// metrics from here).
	Ready func(*Gateway, *tun.Device) error
	// NoConfigure, for Attach: leave the device to the namespace's owner
	// to set up (slirp4netns without --configure). If the namespace has a
	// TAP device named IfName (made beforehand, as rootlesskit does),
	// Attach attaches to it and leaves it in place on return; otherwise it
	// creates a TUN device, down, without addresses or routes.
	NoConfigure bool
}

// IsInit reports whether this process was started by Run or Attach as the
// sandbox's child; its main function must then call Init.
func IsInit() bool { return nsexec.IsInit() }

// Init is the child's side of Run and Attach (see Options.Self): inside
// the namespaces it makes the sandbox's interface, hands it to the parent
// and, for Run, runs the command as PID 1 of the sandbox's PID
// namespace. It returns only on failure or when its job is done, with the
// exit code to use.
func Init(args []string) int { return nsexec.Init(args) }

// NotFoundError reports that the command to run was not found; Run
// returns exit code 127 with it, as shells do.
type NotFoundError = nsexec.NotFoundError

// Interrupt is the cause (context.Cause) of a context that a signal to
// the process ended: Run passes the signal on to the command (and those
// that Interrupt.More delivers after it) instead of stopping it, and
// returns the command's exit code. Attach returns 0 whatever the cause.
type Interrupt = nsexec.Interrupt

// check validates o and fills in its defaults, o.Gateway's included,
// and returns what the guest's side needs. It is the one check of
// Options: Run and Attach make it once, and serve passes the checked
// Gateway on. A field it refuses gives a *ConfigError.
func (o *Options) check() (nsexec.Guest, error) {
	if o.MTU == 0 {
		o.MTU = DefaultMTU
	}
	if o.MTU < 1280 || o.MTU > 65520 {
		return nsexec.Guest{}, fieldError("MTU", o.MTU)
	}
	if o.IfName == "" {
		o.IfName = DefaultIfName
	}
	if err := (tun.Config{Name: o.IfName}).Validate(); err != nil {
		return nsexec.Guest{}, fieldError("IfName", o.IfName)
	}
	if o.TxQueueLen == 0 {
		o.TxQueueLen = DefaultTxQueueLen
	}
	if o.TxQueueLen < 1 || o.TxQueueLen > tun.MaxTxQueueLen {
		return nsexec.Guest{}, fieldError("TxQueueLen", o.TxQueueLen)
	}
	if o.Self == "" {
		o.Self = nsexec.DefaultSelf
	}
	if err := o.Gateway.check(); err != nil {
		return nsexec.Guest{}, within("Gateway.", err)
	}
	addrs := o.Gateway.addrs()
	g := nsexec.Guest{IfName: o.IfName, MTU: o.MTU, TxQueueLen: o.TxQueueLen, Addrs: []netip.Prefix{addrs.Guest}, Gateways: []netip.Addr{addrs.Gateway.Addr()}}
	if addrs.Guest6.IsValid() {
		g.Addrs = append(g.Addrs, addrs.Guest6)
		g.Gateways = append(g.Gateways, addrs.Gateway6.Addr())
	}
	return g, nil
}

// serve starts a Gateway on dev with o's forwards, and calls o.Ready.
// o has been through check. The caller closes dev after the Gateway.
func (o *Options) serve(dev *tun.Device) (*Gateway, error) {
	gcfg := o.Gateway
	gcfg.Link = dev.LinkEndpoint()
	gw, err := newGateway(gcfg)
	if err != nil {
		return nil, err
	}
	for _, f := range o.Forwards {
		if err := gw.AddForward(f); err != nil {
			gw.Close()
			return nil, err
		}
	}
	if o.Ready != nil {
		if err := o.Ready(gw, dev); err != nil {
			gw.Close()
			return nil, err
		}
	}
	return gw, nil
}
