package main

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/api"
	"github.com/ustacknet/ustack/portfwd"
	"github.com/ustacknet/ustack/portfwd/portfwdtest"
)

// TestForwardCmd runs `ustack forward` against an API server over a
// forward manager, on a socket in a temporary directory: its output, its
// errors and their exit codes.
func TestForwardCmd(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	m := portfwdtest.NewManager()
	srv, err := api.Listen(sock, api.Config{Forwards: m})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// A ustack that serves no forwards (ustack run).
	runSock := filepath.Join(dir, "run.sock")
	runSrv, err := api.Listen(runSock, api.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer runSrv.Close()

	tests := []struct {
		name string
		args []string
		out  string // on success
		err  string // else, the error as printed after "ustack: "
		code int
	}{
		{"add", []string{"add", "8080:80"}, "added: 127.0.0.1:8080:80/tcp\n", "", 0},
		{"add v6 udp", []string{"add", "[::1]:5353:53/UDP"}, "added: [::1]:5353:53/udp\n", "", 0},
		{"add again", []string{"add", "127.0.0.1:8080:80/tcp"}, "", "portfwdtest: forward 127.0.0.1:8080:80/tcp: forward already exists", 1},
		{"list", []string{"list"}, "127.0.0.1:8080:80/tcp\n[::1]:5353:53/udp\n", "", 0},
		{"remove", []string{"remove", "8080:80"}, "removed: 127.0.0.1:8080:80/tcp\n", "", 0},
		{"remove again", []string{"remove", "8080:80"}, "", "portfwdtest: forward 127.0.0.1:8080:80/tcp: no such forward", 1},
		{"list after remove", []string{"list"}, "[::1]:5353:53/udp\n", "", 0},
		{"add bad spec", []string{"add", "nonsense"}, "", `invalid port forward "nonsense": want two or three fields separated by ':'; want [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp], such as 8080:80 or 127.0.0.1:5353:53/udp`, 2},
		{"add no spec", []string{"add"}, "", "forward add takes one SPEC, [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]", 2},
		{"list extra arg", []string{"list", "x"}, "", `ustack forward list takes no arguments, got ["x"]`, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(append(append([]string{"forward"}, tc.args...), "--api", sock)...)
			checkOutcome(t, out, err, tc.out, tc.err, tc.code)
		})
	}

	// What reaching the server fails with.
	for _, tc := range []struct {
		name string
		args []string
		err  string
		code int
	}{
		{"no api", []string{"forward", "list"}, "--api PATH is required: the API socket of the running sandbox", 2},
		{"nobody serving", []string{"forward", "list", "--api", filepath.Join(dir, "none.sock")}, "no ustack is serving the API at " + filepath.Join(dir, "none.sock"), 1},
		{"not a sandbox", []string{"forward", "add", "--api", runSock, "8080:80"}, "api: POST /v1/forwards: this ustack does not serve port forwards: they are a sandbox's (ustack sandbox --api PATH)", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(tc.args...)
			checkOutcome(t, out, err, "", tc.err, tc.code)
		})
	}
	if diff := cmp.Diff([]portfwd.Forward{{Proto: "udp", Host: netip.MustParseAddrPort("[::1]:5353"), GuestPort: 53}}, m.Forwards(),
		cmp.Comparer(func(a, b portfwd.Forward) bool { return a == b })); diff != "" {
		t.Errorf("forwards at the end (-want +got):\n%s", diff)
	}
}
