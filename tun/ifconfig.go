package tun

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
)

// Off Linux the water driver configures the kernel's side of the device
// with the system's own commands: ifconfig and route on macOS, netsh on
// Windows. Each is run directly with an exact argument list (os/exec,
// never a shell), so no name or address is ever parsed by a shell. The
// argument lists are built here, for every system, so that they are
// tested wherever the tests run.

// darwinCommands configures utun name as c says. utun is a
// point-to-point interface: an IPv4 address is given itself as the
// destination and its subnet is routed to the interface, as wireguard's
// wg-quick does; IPv6 addresses take a prefix length.
func darwinCommands(name string, c checked) [][]string {
	cmds := [][]string{{"ifconfig", name, "mtu", strconv.Itoa(c.MTU)}}
	for _, p := range c.Addrs {
		if p.Addr().Is4() {
			cmds = append(cmds,
				[]string{"ifconfig", name, "inet", p.String(), p.Addr().String(), "alias"},
				[]string{"route", "-q", "-n", "add", "-inet", p.Masked().String(), "-interface", name})
		} else {
			cmds = append(cmds, []string{"ifconfig", name, "inet6", p.String(), "alias"})
		}
	}
	if c.Up {
		cmds = append(cmds, []string{"ifconfig", name, "up"})
	}
	for _, r := range c.routes {
		cmds = append(cmds, []string{"route", "-q", "-n", "add", "-" + family(r.Addr()), r.String(), "-interface", name})
	}
	return cmds
}

// windowsCommands configures the TAP-Windows adapter name as c says, with
// netsh, for the running session only (store=active): the adapter keeps no
// configuration after ustack ends. TAP-Windows brings the link up itself
// when the device is opened.
func windowsCommands(name string, c checked) [][]string {
	iface := "name=" + name
	var cmds [][]string
	for _, fam := range []string{"ipv4", "ipv6"} {
		cmds = append(cmds, []string{"netsh", "interface", fam, "set", "subinterface", name, "mtu=" + strconv.Itoa(c.MTU), "store=active"})
	}
	for _, p := range c.Addrs {
		if p.Addr().Is4() {
			mask := net.IP(net.CIDRMask(p.Bits(), 32)).String()
			cmds = append(cmds, []string{"netsh", "interface", "ipv4", "add", "address", iface, "address=" + p.Addr().String(), "mask=" + mask, "store=active"})
		} else {
			cmds = append(cmds, []string{"netsh", "interface", "ipv6", "add", "address", "interface=" + name, "address=" + p.String(), "store=active"})
		}
	}
	for _, r := range c.routes {
		fam := "ipv4"
		if r.Addr().Is6() {
			fam = "ipv6"
		}
		cmds = append(cmds, []string{"netsh", "interface", fam, "add", "route", "prefix=" + r.String(), "interface=" + name, "store=active"})
	}
	return cmds
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "inet"
	}
	return "inet6"
}

// runCommands runs each command in turn, without a shell, and stops at
// the first failure, with an error that gives the command and its output.
func runCommands(device string, cmds [][]string) error {
	for _, cmd := range cmds {
		var out bytes.Buffer
		x := exec.Command(cmd[0], cmd[1:]...)
		x.Stdout, x.Stderr = &out, &out
		if err := x.Run(); err != nil {
			msg := strings.TrimSpace(out.String())
			if msg != "" {
				msg = ": " + msg
			}
			return &deviceError{msg: fmt.Sprintf("configure %q: %s: %v%s", device, strings.Join(quoteArgs(cmd), " "), err, msg), err: err}
		}
	}
	return nil
}

// quoteArgs quotes the arguments that need it, for messages only.
func quoteArgs(cmd []string) []string {
	q := make([]string, len(cmd))
	for i, a := range cmd {
		if a == "" || strings.ContainsAny(a, " \t\"'\\$;&|<>()*?[]{}`") {
			a = strconv.Quote(a)
		}
		q[i] = a
	}
	return q
}
