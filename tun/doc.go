// Package tun opens TUN devices and turns them into gVisor link
// endpoints, so that a user-space stack can exchange IP packets with the
// kernel; it also provides an in-memory link pair for tests and demos.
//
// Three drivers make devices (Config.Driver). On Linux the default,
// DriverKernel, is this package's own code over /dev/net/tun, described
// below. DriverWater uses github.com/songgao/water, on Linux by choice and
// on macOS and Windows as the only driver (see "The water driver").
// DriverFreeBSD is this package's own code over FreeBSD's tun(4), the only
// driver there (see "The FreeBSD driver").
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
// version answers "not implemented on this platform"): FreeBSD has its
// own driver, and on the other BSDs Open fails at once, saying so.
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
// # The FreeBSD driver
//
// DriverFreeBSD opens tun(4) with golang.org/x/sys/unix (device_freebsd.go,
// bsdtun.go). It is compiled, vetted and unit-tested on Linux, but has not
// been run on FreeBSD.
//
// Config.Name chooses the device: empty or "tun%d" opens the cloning
// device /dev/tun, which makes the next free tunN (this needs root and
// sysctl net.link.tun.devfs_cloning=1, the default); "tunN" opens
// /dev/tunN, which makes that unit; any other name without "%d" clones a
// tunN and renames it (ifconfig tunN name NAME). A name that an interface
// already has is refused before anything is made (os.ErrExist), since
// opening /dev/tunN of an existing interface would attach to it. The
// descriptor is opened with O_CLOEXEC and O_NONBLOCK, and Open then:
//   - asks for the interface's name (TUNGIFNAME, FreeBSD 13 and later);
//   - sets the device to broadcast mode (TUNSIFMODE, IFF_BROADCAST): in
//     its default point-to-point mode FreeBSD refuses an address without a
//     destination address and routes only that one host, while in
//     broadcast mode an address with a prefix routes its subnet to the
//     interface, as on Linux (tun(4) does no ARP or neighbor discovery
//     in either mode);
//   - turns on TUNSIFHEAD, so that every packet crossing the descriptor
//     carries its address family in 4 bytes, big-endian (AF_INET 2,
//     AF_INET6 28 on FreeBSD): without it tun(4) carries IPv4 only. The
//     reader strips the header with one readv per packet and skips what is
//     neither IPv4 nor IPv6; the writer adds it with one writev;
//   - configures the interface with the commands below.
//
// The commands run in this order, each with an exact argument list
// through os/exec, never through a shell (freebsd.go builds the lists):
//
//	ifconfig tunN name NAME                     (for another Config.Name)
//	ifconfig NAME mtu MTU
//	ifconfig NAME inet 198.18.0.1/24 alias      (each IPv4 address)
//	ifconfig NAME inet6 -ifdisabled no_dad      (before the first IPv6 address)
//	ifconfig NAME inet6 fd00::1/64 alias        (each IPv6 address)
//	ifconfig NAME up                            (Config.Up)
//	ifconfig NAME down                          (not Config.Up, with addresses)
//	route -q -n add -inet 198.18.4.0/24 -interface NAME    (each route;
//	route -q -n add -inet6 fd00:4::/64 -interface NAME      -inet6 for IPv6)
//
// "-ifdisabled" enables IPv6 on an interface that the system made with
// it off (rc.conf's ipv6_activate_all_interfaces), and "no_dad" skips
// duplicate address detection, as the kernel driver does on Linux
// (IFA_F_NODAD): nobody else is on the link. tun(4) sets an interface up
// when it gets an address, hence "down" without Config.Up.
//
// Closing a tun(4) device sets its interface down and removes its
// addresses and routes, but the interface stays; Device.Close therefore
// runs "ifconfig NAME destroy" after closing, with the name the device
// reports then. A failed Open does the same for the interface it made.
// The reader waits in Go's poller (kqueue) and stops through a read
// deadline, so detaching the NIC leaves the device open. The endpoint is
// the water driver's: one queue, no offloads, one system call per packet
// each way.
//
// Limits: Config.MTU is at most 16384, because tun(4) refuses (EIO) a
// write longer than its TUNMRU, which is 16384 in older releases (FreeBSD
// 14's sources have 65535), so a larger MTU would lose the stack's largest
// packets there. Config.TxQueueLen is refused (FreeBSD sets every interface's
// queue at boot, net.link.ifqmaxlen), as are Config.MultiQueue,
// Config.RequireOffload and Config.NetNS. On a FreeBSD older than 13,
// TUNGIFNAME fails and Open says so, but it cannot tell which tunN it
// cloned, so that interface stays behind. Devices live in the calling
// process's network stack: FreeBSD's counterpart of a network namespace,
// a VNET jail, is not supported (Config.NetNS is Linux-only).
//
// # Pipe
//
// Pipe wires two link endpoints back to back in memory, with a goroutine per
// direction copying packets from one side's outbound queue to the other's
// inbound path, as a TUN device between two stacks would. It needs no
// privileges.
package tun
