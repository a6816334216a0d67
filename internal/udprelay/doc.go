// Package udprelay carries a sandbox guest's UDP flows between the
// endpoints of a gVisor stack and connected host sockets. Linux only.
//
// Each flow is a gVisor UDP endpoint (made by the stack's UDP forwarder)
// paired with a connected, non-blocking host socket, and none has a
// goroutine, a timer or a buffer of its own. Two goroutines carry every
// flow:
//   - the pump (pump.go) reads the endpoints that have datagrams from the
//     guest (their waiter queues tell it, with no goroutine parked per
//     endpoint) and sends them on the host sockets;
//   - the poller (poll.go) waits on one epoll set of the host sockets,
//     whose own descriptor sits in Go's network poller, and writes what
//     the host sockets receive to the endpoints.
//
// A third sweeps idle flows away (sweep.go).
//
// A new flow costs the stack's endpoint and three system calls (socket,
// connect, epoll_ctl; a bind too with an outbound address), made where
// the stack hands the flow over. A goroutine pair per flow would, in a
// burst of new flows, leave hundreds of goroutines runnable ahead of the
// TUN reader (an execution trace of a 3000-flow burst showed the reader
// waiting 18 ms behind them while the guest's queue overflowed), and
// would hold two 64 KiB read buffers per flow for as long as it lives.
//
// The relay decides nothing about which flows to carry: its owner (a
// Gateway) admits a flow, takes its slot under the cap on flows, and hands
// the relay the endpoint and the host address.
package udprelay
