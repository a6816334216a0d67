// Package redisports is an example of the ustacktest bed driving a server
// nobody here wrote: Debian's redis-server runs in the bed's namespace, and
// the tests check, from redis's own CLIENT LIST and INFO and from the
// wire, that it saw exactly the client ports the stack chose, that a port
// can be reused while redis still holds the last connection on it in
// TIME_WAIT, and that 160 connections churn through 16 ports without a
// failure. BenchmarkRedisChurn16Ports does the same at scale
// (-benchtime=50000x) beside the kernel as the client. The tests are the
// example; this package has no other code.
//
// They need what the bed needs (root and /dev/net/tun) and redis-server
// (Debian package redis-server, which scripts/test.sh installs).
package redisports
