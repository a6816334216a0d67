// Package tun opens TUN devices and turns them into gVisor link
// endpoints, so that a user-space stack can exchange IP packets with the
// kernel; it also provides an in-memory link pair for tests and demos.
//
// Two drivers make devices (Config.Driver). On Linux the default,
// DriverKernel, is this package's own code over /dev/net/tun, described
// below. DriverWater uses github.com/songgao/water, on Linux by choice and
// on macOS and Windows as the only driver (see "The water driver").
//
// # Devices
//
// Open creates a new TUN device from a Config: it opens /dev/net/tun
// (IFF_TUN|IFF_NO_PI, IFF_VNET_HDR for the offloads described under
// Performance, one descriptor per queue with IFF_MULTI_QUEUE),
// then configures the kernel's side of the link over rtnetlink (MTU,
// addresses, link state, routes). Open always creates a fresh device: it
// passes IFF_TUN_EXCL, so it never attaches to an existing interface of the
// same name, which the kernel would otherwise do for a persistent or
// multi-queue TUN.
//
// The device is the boundary between two worlds. The kernel side has the
// Config's addresses and routes; the user-space side is
// Device.LinkEndpoint, a gVisor link endpoint (this package's offload
// endpoint, or link/fdbased without offloads, over the TUN descriptors,
// without an Ethernet header) to hand to stack.CreateNIC.
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
// On the offload path (below) the readers are this package's own and wait
// for packets in Go's network poller, through a duplicate of each queue's
// descriptor; a deadline in the past wakes them to stop. Without offloads
// link/fdbased reads, and it has three lifetime gaps that this package
// closes for it.
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
// By default Open asks for the kernel's offloads: IFF_VNET_HDR, so that
// every packet crossing the descriptor carries a struct virtio_net_hdr,
// and TUNSETOFFLOAD with TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6. Outbound, the
// endpoint tells gVisor's TCP it may hand over segments of up to 64 KiB
// (host GSO): each is one writev with a header asking the kernel to cut it
// at the MSS and complete its checksum, and the kernel's own TCP takes it
// whole, never cut. Inbound, the kernel likewise hands over its TCP
// segments unsplit, up to 64 KiB per read, with partial checksums. The
// virtio header says per packet whether the kernel built the packet
// (partial checksum: the data never crossed a wire), verified it, or
// neither; the reader verifies the last kind itself and drops a bad one
// (Device.Stats counts them), so gVisor is told not to sum inbound
// packets again (rxcsum.go has the details). That replaces both GSO and
// GRO: at MTU 1500 a 64 KiB stretch of a stream costs one system call each
// way instead of 44. The reader puts the headers and the payload in
// separate views (gVisor copies a shared view when it pulls headers from
// it), and neither direction allocates per packet.
//
// gVisor's link/fdbased cannot do this on a TUN descriptor: it turns its
// GSO path on only for sockets, does GRO only in its recvmmsg dispatcher
// (sockets only), and offsets checksums by an Ethernet header that a TUN
// device lacks. The offload path therefore has its own small endpoint
// (vnet_linux.go); fdbased serves the path without offloads. If the kernel
// refuses IFF_VNET_HDR or TUNSETOFFLOAD, Open deletes the half-made device
// and makes it again without them; Device.Offload reports which path is in
// use, and Config.NoOffload chooses the plain one. Without offloads,
// fdbased reads with one readv per packet (its recvmmsg and packet-mmap
// modes apply to sockets only) and writes one writev per packet.
//
// MultiQueue opens one descriptor per queue, each with its own reader and
// handoff worker; the kernel spreads flows over the queues. On a 2-core
// machine two queues measured within 0.97-1.09x of one queue's throughput
// (see docs/BENCHMARKS.md): the kernel's half of the work runs in the
// system calls of the same two cores, so extra readers gain little, and
// one queue stays the default. BenchmarkDeviceTCP measures
// a TCP stream each way; bench/fastpath compares with the kernel.
//
// # Why the kernel driver is not songgao/water
//
// The default Linux device is opened with golang.org/x/sys/unix rather
// than songgao/water, which ustack used at first. water cannot set
// IFF_VNET_HDR, so no offloads, nor IFF_TUN_EXCL, so it attaches to an
// existing device of the same name instead of failing; it opens
// /dev/net/tun without O_CLOEXEC, so child processes inherit the device;
// and it leaks the descriptor when TUNSETIFF fails. It also wraps the
// descriptor in an os.File read through Go's poller, one packet per
// read, while fdbased and this package's reader need the raw descriptor.
// Opening the device takes a few dozen lines, all in device_linux.go.
//
// # The water driver
//
// With DriverWater, Open makes the device with songgao/water: macOS utun
// (named utunN by the system; Config.Name may ask for a number), Windows
// TAP-Windows in TUN mode (adapter tap0901, as OpenVPN installs it;
// Config.Name picks the adapter by its friendly name, and Config.Addrs
// needs an IPv4 entry, from which the driver answers ARP), and Linux
// /dev/net/tun. water has no FreeBSD or other BSD support (its latest
// version answers "not implemented on this platform"), so there Open fails
// at once, saying so.
//
// The link endpoint (water.go) reads and writes one packet per call, as
// water's API allows, with one reader goroutine that delivers through the
// same handoff as the kernel driver. It has no offloads: gVisor computes
// and verifies every checksum, and TCP segments are at most the MTU, so a
// 64 KiB stretch of a stream at MTU 1500 costs 44 system calls each way
// instead of one. It has one queue. Config.MultiQueue and
// Config.RequireOffload are refused with an error that names them;
// Config.NoOffload changes nothing. docs/BENCHMARKS.md gives its cost
// against the kernel driver.
//
// The system's side of the device is configured by ustack, not water: over
// netlink on Linux, as with the kernel driver (Config.NetNS included), and
// elsewhere with the system's commands, ifconfig and route on macOS and
// netsh on Windows (for the running session only), each run with an exact
// argument list through os/exec, never through a shell (ifconfig.go).
//
// On Linux the wrapper works around water's defects where it can. water
// opens /dev/net/tun without O_CLOEXEC; Open holds syscall.ForkLock for
// reading from before the open until it has set FD_CLOEXEC, as package
// syscall does around its own non-atomic close-on-exec, so no child can
// inherit the descriptor. water does not pass IFF_TUN_EXCL, so TUNSETIFF
// on an existing TUN device's name attaches to it; Open first refuses a
// name that an interface already has (EEXIST, os.ErrExist), which leaves
// a race with a device made under that name in between. What remains:
// when TUNSETIFF itself fails (for instance EPERM without CAP_NET_ADMIN)
// water leaks the descriptor it opened, one per failed Open, since it
// returns neither the descriptor nor a file whose finalizer would close
// it. The water device reads through Go's poller, so a read deadline in
// the past stops its reader; on macOS and Windows water's files have no
// deadlines, so removing the NIC there closes the device.
//
// # Pipe
//
// Pipe wires two link endpoints back to back in memory, with a goroutine per
// direction copying packets from one side's outbound queue to the other's
// inbound path, as a TUN device between two stacks would. It needs no
// privileges.
package tun
