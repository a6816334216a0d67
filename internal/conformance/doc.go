// Package conformance holds the TCP and UDP scenarios that check a
// sandbox's network helper (ustack, slirp4netns, pasta) with the Linux
// kernel as the guest: each scenario has a guest part, run inside the
// sandbox, and a host part, run by a peer on the host's loopback.
//
// The two parts talk over a control connection, opened by the guest to
// the peer's listener. The guest sends the scenario's name and
// parameters; the peer opens a fresh data listener (and a UDP socket
// where the scenario needs one) on the same address, answers with its
// ports, and both parts then run the scenario over data connections,
// exchanging events on the control connection. The peer ends with its
// verdict, and RunGuest combines both parts into one Result.
//
// Some scenarios change the guest's packet filter with nft(8) (to drop a
// window update, inject loss, clamp the MSS option or silence the
// guest): the guest must run as root in a network namespace of its own.
// Every wait is for an event with a bound; the only fixed waits are the
// scenarios' own holds (a zero window held for Params.Hold).
package conformance
