// Package packetio is a packet-level link for a user-space stack: raw IP
// packets go in and come out through plain byte slices, in batches, so
// that any transport (a VPN tunnel, a userspace switch, a test harness)
// can drive a stack without a TUN device.
//
// A Link has two sides. The stack side is Link.LinkEndpoint, a gVisor
// link endpoint to give to stack.Config.Link (or to gVisor's
// Stack.CreateNIC). The packet side is ReadPackets and WritePackets, with
// the batch shape wireguard-go's tun.Device uses: a slice of buffers, a
// slice of sizes and an offset into each buffer.
//
// # Directions
//
// Outbound: packets the stack sends are queued, by reference and without
// copying, in a bounded queue (Config.QueueLen). ReadPackets blocks until
// at least one is queued, then copies as many as are queued and fit into
// the caller's buffers, one packet per buffer, and releases them.
//
// Inbound: WritePackets copies each buffer into a packet of the stack's
// and delivers it inline, on the caller's goroutine, so that the caller
// is slowed by the stack's processing and nothing is queued in between.
// Buffers that do not hold an IPv4 or IPv6 packet (by the version nibble)
// are dropped and counted, as a NIC drops garbage.
//
// # Back-pressure
//
// When the outbound queue is full, the stack's sending goroutine blocks
// until ReadPackets makes room, as a full transmit ring stalls a kernel's
// qdisc, so that a fast sender (a TCP bulk transfer) is paced by the
// transport instead of losing packets and backing off. The wait is
// bounded by Config.BlockTimeout: a packet that still finds the queue
// full then is dropped, and until the next ReadPackets every further
// packet meeting a full queue is dropped at once, so that a packet side
// which stopped reading costs one timeout, not one per packet. Close ends
// every wait.
//
// Because inbound delivery is inline, a delivery can itself send (a TCP
// reset, an ICMP error) and so meet the same full queue. Drive ReadPackets
// and WritePackets from different goroutines; a driver that does both
// from one goroutine can stall for up to BlockTimeout whenever the queue
// fills.
//
// # Buffers: ownership and lifetime
//
// The caller owns every slice it passes. ReadPackets writes packet i into
// bufs[i][offset:] and its length into sizes[i]; it keeps no reference to
// bufs or sizes after it returns. WritePackets reads packet i from
// bufs[i][offset:] and copies it before delivering it, so the caller may
// reuse every buffer as soon as WritePackets returns.
//
// The stack's own packets (gVisor PacketBuffers) never leave the package:
// each one queued holds one reference, which is dropped after ReadPackets
// copied it out, after it was dropped, or when Close drains the queue.
// Each inbound packet is released after delivery. Neither direction
// allocates on the Go heap per packet in steady state: packet storage
// comes from gVisor's pools, and the queue is a fixed channel.
//
// # Lifetime
//
// Close drops the queued packets, makes ReadPackets and WritePackets fail
// with an error matching os.ErrClosed and net.ErrClosed (ErrClosed), ends
// every blocked call on both sides, and makes the stack's sends fail.
// Removing the link from its stack (stack.Stack.Close, gVisor's RemoveNIC)
// closes it too, so the packet side learns that the stack is gone. The
// Link starts no goroutines.
package packetio
