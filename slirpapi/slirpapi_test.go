package slirpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ustacknet/ustack/portfwd"
	"github.com/ustacknet/ustack/portfwd/portfwdtest"
)

// call sends req to s over an in-memory connection and decodes the reply.
func call(t *testing.T, s *Server, req string) map[string]any {
	t.Helper()
	c, p := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.handle(p)
	}()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	c.Close()
	<-done
	if err != nil {
		t.Fatalf("%s: reading the reply: %v", req, err)
	}
	var reply map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(b), &reply); err != nil {
		t.Fatalf("%s: reply %q is not JSON: %v", req, b, err)
	}
	return reply
}

var guest = netip.MustParseAddr("10.0.2.100")

func newServer() (*Server, *portfwdtest.Manager) {
	m := portfwdtest.NewManager()
	return New(m, func(f portfwd.Forward) netip.AddrPort { return netip.AddrPortFrom(guest, f.GuestPort) }), m
}

// TestServerOverManager: the protocol adds, lists and removes forwards
// through any portfwd.Manager, with ids of its own.
func TestServerOverManager(t *testing.T) {
	s, m := newServer()
	r := call(t, s, `{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 8080, "guest_port": 80}}`)
	ret, ok := r["return"].(map[string]any)
	if !ok || ret["id"] != float64(1) {
		t.Fatalf("add_hostfwd: %v, want id 1", r)
	}
	want := portfwd.Forward{Proto: "tcp", Host: netip.MustParseAddrPort("127.0.0.1:8080"), GuestPort: 80}
	if got := m.Forwards(); len(got) != 1 || got[0] != want {
		t.Fatalf("manager has %v, want [%v]", got, want)
	}
	r = call(t, s, `{"execute": "list_hostfwd"}`)
	entries := r["return"].(map[string]any)["entries"].([]any)
	if len(entries) != 1 || entries[0].(map[string]any)["guest_addr"] != "10.0.2.100" || entries[0].(map[string]any)["host_port"] != float64(8080) {
		t.Fatalf("list_hostfwd: %v", r)
	}
	// A forward removed another way leaves the list.
	if err := m.RemoveForward(want); err != nil {
		t.Fatal(err)
	}
	r = call(t, s, `{"execute": "list_hostfwd"}`)
	if entries := r["return"].(map[string]any)["entries"].([]any); len(entries) != 0 {
		t.Fatalf("list_hostfwd after removal elsewhere: %v", r)
	}
	// The list forgot its id too.
	if r := call(t, s, `{"execute": "remove_hostfwd", "arguments": {"id": 1}}`); r["error"] == nil {
		t.Fatalf("remove_hostfwd of a forward gone elsewhere: %v, want an error", r)
	}
	// Ids go on; remove_hostfwd removes through the Manager.
	r = call(t, s, `{"execute": "add_hostfwd", "arguments": {"proto": "udp6", "host_port": 5353, "guest_port": 53}}`)
	if ret, ok := r["return"].(map[string]any); !ok || ret["id"] != float64(2) {
		t.Fatalf("second add_hostfwd: %v, want id 2", r)
	}
	want = portfwd.Forward{Proto: "udp", Host: netip.MustParseAddrPort("[::]:5353"), GuestPort: 53}
	if got := m.Forwards(); len(got) != 1 || got[0] != want {
		t.Fatalf("manager has %v, want [%v] (udp6 defaults to ::)", got, want)
	}
	if r := call(t, s, `{"execute": "remove_hostfwd", "arguments": {"id": 2}}`); r["error"] != nil {
		t.Fatalf("remove_hostfwd: %v", r)
	}
	if got := m.Forwards(); len(got) != 0 {
		t.Fatalf("manager still has %v", got)
	}
}

// TestServerBadRequests: each bad request gets an error that says what
// was wrong and what is allowed.
func TestServerBadRequests(t *testing.T) {
	s, m := newServer()
	for _, tc := range []struct{ req, want string }{
		{`not json`, "cannot parse JSON"},
		{`{}`, `no "execute"`},
		{`{"execute": "reboot"}`, `unknown execute "reboot" (want add_hostfwd, list_hostfwd or remove_hostfwd)`},
		{`{"execute": "add_hostfwd"}`, "no arguments (want proto, host_port, guest_port"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "sctp", "host_port": 1, "guest_port": 1}}`, `bad arguments.proto "sctp": want tcp, udp, tcp4, udp4, tcp6 or udp6`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 70000, "guest_port": 1}}`, "bad arguments.host_port 70000: want 1-65535"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 1, "guest_port": 0}}`, "bad arguments.guest_port 0: want 1-65535"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp6", "host_addr": "127.0.0.1", "host_port": 1, "guest_port": 1}}`, "not an address of proto tcp6"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 1, "guest_port": 1, "guest_addr": "10.0.2.99"}}`, "want the guest's address 10.0.2.100"},
		{`{"execute": "remove_hostfwd"}`, "no arguments (want id)"},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 7}}`, "id 7 not found"},
	} {
		r := call(t, s, tc.req)
		e, ok := r["error"].(map[string]any)
		if !ok {
			t.Errorf("%s: reply %v, want an error", tc.req, r)
			continue
		}
		if desc, _ := e["desc"].(string); !strings.Contains(desc, tc.want) {
			t.Errorf("%s: error %q, want it to say %q", tc.req, desc, tc.want)
		}
	}
	if got := m.Forwards(); len(got) != 0 {
		t.Errorf("bad requests added %v", got)
	}
}
