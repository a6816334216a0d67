// Package tcprelay carries a guest's TCP connections to host sockets
// without a TCP endpoint of gVisor's for each: it translates between the
// guest's segments on a link and a host socket per connection, the way
// pasta does. The sandbox's gateway wraps its link in a Relay and decides,
// through the Gateway interface, which connections it carries and where
// to. Linux only (relay.go has the design).
package tcprelay
