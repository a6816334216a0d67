// Package tun opens Linux TUN devices and turns them into gVisor link
// endpoints, so that a user-space stack can exchange IP packets with the
// kernel; it also provides an in-memory link pair for tests and demos.
//
// # Devices
//
// Open creates a new TUN device from a Config: it opens /dev/net/tun
// (IFF_TUN|IFF_NO_PI, one descriptor per queue with IFF_MULTI_QUEUE),
// then configures the kernel's side of the link over rtnetlink (MTU,
// addresses, link state, routes). Open always creates a fresh device: it
// passes IFF_TUN_EXCL, so it never attaches to an existing interface of the
// same name, which the kernel would otherwise do for a persistent or
// multi-queue TUN.
//
// The device is the boundary between two worlds. The kernel side has the
// Config's addresses and routes; the user-space side is
// Device.LinkEndpoint, a gVisor link endpoint (link/fdbased over the TUN
// descriptors, without an Ethernet header) to hand to stack.CreateNIC.
// Packets the kernel routes into the device come out of the endpoint, and
// packets the stack writes to the endpoint enter the kernel as if they had
// arrived on the interface.
//
// With Config.NetNS the device is created in another network namespace:
// the descriptors are opened on a thread inside it (a TUN device belongs to
// the namespace of the thread that opened /dev/net/tun) and configured
// through a netlink socket made there. The descriptors stay in this
// process, so the stack keeps running in the original namespace while the
// interface lives in the other one. This is how a sandboxed namespace gets
// its network from ustack.
//
// # Lifetime
//
// A Device owns its descriptors. Device.Close removes the device's NIC from
// the stack it is attached to (through the endpoint's on-close action), stops
// the endpoint's goroutines and waits for them, and closes the
// descriptors; closing the last descriptor of a non-persistent TUN device
// makes the kernel delete the interface, with its addresses and routes.
// Removing the NIC from the stack (Stack.RemoveNIC, Stack.Destroy) stops
// the endpoint for good but leaves the device open until Close.
//
// link/fdbased has three lifetime gaps that this package closes for it.
// First, its readers block in ppoll on the descriptor, and closing a
// descriptor does not wake ppoll (worse, the number may be reused), so
// Close first stops them through fdbased's own stop mechanism and only then
// closes. Second, fdbased never closes the eventfd it creates per descriptor
// for that stop mechanism, so Close closes them too. Third, a reader that
// delivers packets inline (as fdbased does with one processor per queue,
// its default on a one-CPU machine) deadlocks the removal of its NIC: the
// stack removes a NIC holding its lock and waits there for the readers,
// and it takes that lock for every inbound packet. So the readers here
// hand packets to workers of this package (one per queue, a flow always to
// the same one), which are not waited for under the stack's lock;
// Device.Close waits for them.
//
// # Performance
//
// A TUN descriptor is not a socket, so fdbased reads it with one readv per
// packet (its recvmmsg and packet-mmap modes apply to sockets only) and
// writes one writev per packet. Offloads (GSO, GRO, checksum) are off:
// they need IFF_VNET_HDR, which this package does not set yet. With
// MultiQueue, the kernel spreads flows over the queues and each queue has
// its own reader. BenchmarkDeviceTCP measures a TCP stream each way.
//
// # Pipe
//
// Pipe wires two link endpoints back to back in memory, with a goroutine per
// direction copying packets from one side's outbound queue to the other's
// inbound path, as a TUN device between two stacks would. It needs no
// privileges.
package tun
