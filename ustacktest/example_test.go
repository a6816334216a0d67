//go:build linux

package ustacktest_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/ustacktest"
)

// closeFirst accepts connections on l and closes each one at once, until
// l is closed.
func closeFirst(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// Five connections through a three-port range, the server closing each
// one first: the ports go round the range, and the server saw the same
// ports in the same order. In a test, ustacktest.New(t, ...) replaces
// Open and Close.
func Example() {
	bed, err := ustacktest.Open(ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40002}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bed.Close()
	l, err := bed.Listen("tcp", "198.18.0.1:8080")
	if err != nil {
		fmt.Println(err)
		return
	}
	go closeFirst(l)

	server := netip.MustParseAddrPort("198.18.0.1:8080")
	results, err := bed.Churn(context.Background(), server, ustacktest.ChurnOptions{N: 5, Close: ustacktest.ServerCloses})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range results {
		fmt.Println(r.Index, r.Port, r.Err)
	}
	fmt.Println("server saw", bed.SeenPorts(server))
	// Output:
	// 0 40000 <nil>
	// 1 40001 <nil>
	// 2 40002 <nil>
	// 3 40000 <nil>
	// 4 40001 <nil>
	// server saw [40000 40001 40002 40000 40001]
}

// A server binary runs in the bed's namespace; here ip(8) shows the
// kernel's side of the bed's device.
func ExampleBed_Command() {
	bed, err := ustacktest.Open(ustacktest.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bed.Close()
	out, err := bed.Command("ip", "-o", "addr", "show", "dev", bed.Device().Name(), "scope", "global").Output()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		fmt.Println(f[2], f[3])
	}
	// Output:
	// inet 198.18.0.1/24
	// inet6 fd00:18::1/64
}

// The second connection from port 40005 arrives while the server's kernel
// still holds the first one in TIME_WAIT; Linux lets it take over.
func ExampleBed_ReuseTimeWait() {
	bed, err := ustacktest.Open(ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40009}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bed.Close()
	l, err := bed.Listen("tcp", "[fd00:18::1]:8080")
	if err != nil {
		fmt.Println(err)
		return
	}
	go closeFirst(l)

	server := netip.MustParseAddrPort("[fd00:18::1]:8080")
	rr, err := bed.ReuseTimeWait(context.Background(), server, ustacktest.ReuseOptions{Port: 40005})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("first:", rr.First.Port, rr.First.Err)
	fmt.Println("server in TIME_WAIT:", rr.TimeWait)
	fmt.Println("second:", rr.Second.Port, rr.Second.Err)
	fmt.Println("server saw", bed.SeenPorts(server))
	// Output:
	// first: 40005 <nil>
	// server in TIME_WAIT: true
	// second: 40005 <nil>
	// server saw [40005 40005]
}
