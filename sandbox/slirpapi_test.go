//go:build linux

package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// slirpCall sends one request over the socket, without closing its write
// side (as some clients do), and returns the decoded reply.
func slirpCall(t *testing.T, sock, req string) map[string]any {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%s: reading the reply: %v", req, err)
	}
	var reply map[string]any
	if err := json.Unmarshal(b, &reply); err != nil {
		t.Fatalf("%s: reply %q is not JSON: %v", req, b, err)
	}
	return reply
}

func TestSlirpAPI(t *testing.T) {
	w := newWorld(t, nil)
	sock := filepath.Join(t.TempDir(), "slirp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	api := NewSlirpAPI(w.gw)
	served := make(chan error, 1)
	go func() { served <- api.Serve(l) }()
	defer func() { l.Close(); <-served }()

	// The guest serves port 80.
	gl, err := w.guest.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	go func() {
		for {
			c, err := gl.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hi from the guest")
			c.Close()
		}
	}()
	free, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := free.Addr().(*net.TCPAddr).Port
	free.Close()

	add := fmt.Sprintf(`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": %d, "guest_port": 80}}`, port)
	r := slirpCall(t, sock, add)
	if ret, ok := r["return"].(map[string]any); !ok || ret["id"] != float64(1) {
		t.Fatalf("add_hostfwd: %v, want {return: {id: 1}}", r)
	}
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "hi from the guest" {
		t.Fatalf("through the forward: %q", b)
	}
	r = slirpCall(t, sock, `{"execute": "list_hostfwd"}`)
	got, _ := json.Marshal(r)
	want := fmt.Sprintf(`{"return":{"entries":[{"guest_addr":"10.0.2.100","guest_port":80,"host_addr":"127.0.0.1","host_port":%d,"id":1,"proto":"tcp"}]}}`, port)
	if string(got) != want {
		t.Fatalf("list_hostfwd:\n got %s\nwant %s", got, want)
	}

	errs := []struct{ req, want string }{
		{add, "already"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "sctp", "host_port": 1, "guest_port": 2}}`, "bad arguments.proto"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 0, "guest_port": 2}}`, "bad arguments.host_port"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 70000, "guest_port": 2}}`, "bad arguments.host_port"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "udp", "host_port": 5353, "guest_port": 0}}`, "bad arguments.guest_port"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "localhost", "host_port": 1, "guest_port": 2}}`, "bad arguments.host_addr"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp6", "host_addr": "127.0.0.1", "host_port": 1, "guest_port": 2}}`, "not an address of proto tcp6"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 1, "guest_addr": "10.0.2.99", "guest_port": 2}}`, "want the guest's address 10.0.2.100"},
		{`{"execute": "add_hostfwd"}`, "no arguments"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": "80", "guest_port": 2}}`, "host_port of type int"},
		{`{"execute": "remove_hostfwd", "arguments": {}}`, "bad arguments.id: missing"},
		{`{"execute": "remove_hostfwd", "arguments": {"id": "one"}}`, "bad arguments"},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 7}}`, "id 7 not found"},
		{`{"execute": "reboot"}`, "unknown execute"},
		{`{}`, "no \"execute\""},
		{`not json`, "cannot parse JSON"},
	}
	for _, e := range errs {
		r := slirpCall(t, sock, e.req)
		m, _ := r["error"].(map[string]any)
		desc, _ := m["desc"].(string)
		if !strings.Contains(desc, e.want) {
			t.Errorf("%s: reply %v, want an error containing %q", e.req, r, e.want)
		}
	}

	r = slirpCall(t, sock, `{"execute": "remove_hostfwd", "arguments": {"id": 1}}`)
	if got, _ := json.Marshal(r); string(got) != `{"return":{}}` {
		t.Fatalf("remove_hostfwd: %s", got)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second); err == nil {
		c.Close()
		t.Fatal("the host port still accepts after remove_hostfwd")
	}
	if r := slirpCall(t, sock, `{"execute": "list_hostfwd"}`); fmt.Sprint(r) != "map[return:map[entries:[]]]" {
		t.Errorf("list after remove: %v", r)
	}
	// An IPv4 wildcard forward leaves the IPv6 wildcard of the same port
	// free (as slirp4netns binds it: one family).
	v4 := fmt.Sprintf(`{"execute": "add_hostfwd", "arguments": {"proto": "tcp4", "host_addr": "0.0.0.0", "host_port": %d, "guest_port": 80}}`, port)
	v6 := fmt.Sprintf(`{"execute": "add_hostfwd", "arguments": {"proto": "tcp6", "host_addr": "::", "host_port": %d, "guest_port": 80}}`, port)
	for _, req := range []string{v4, v6} {
		if r := slirpCall(t, sock, req); r["return"] == nil {
			t.Fatalf("%s: %v", req, r)
		}
	}
	for _, id := range []int{2, 3} {
		slirpCall(t, sock, fmt.Sprintf(`{"execute": "remove_hostfwd", "arguments": {"id": %d}}`, id))
	}
	// IDs are not reused.
	r = slirpCall(t, sock, add)
	if ret, ok := r["return"].(map[string]any); !ok || ret["id"] != float64(4) {
		t.Fatalf("fourth add_hostfwd: %v, want id 4", r)
	}
}

// NoDNS: the DNS address answers nothing; port 53 there is refused like
// any other address in the guest's network.
func TestNoDNS(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.NoDNS = true })
	c, err := w.guest.Dial("udp", "10.0.2.3:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("query"))
	if _, err := c.Read(make([]byte, 16)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("read after a datagram to the disabled DNS address: %v, want a refusal (ICMP unreachable)", err)
	}
	if s := w.gw.Stats(); s.DNSQueries != 0 || s.Denied == 0 {
		t.Errorf("stats %+v: want no DNS query and a denial", s)
	}
}

// The slirp4netns protocol goes through the gateway's forward functions,
// as the control API does: a forward added one way is seen the other
// way, and one removed through the gateway leaves list_hostfwd.
func TestSlirpAPISharesForwards(t *testing.T) {
	w := newWorld(t, nil)
	a := NewSlirpAPI(w.gw)
	free, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := free.Addr().(*net.TCPAddr).Port
	free.Close()
	do := func(execute, args string) string {
		var raw json.RawMessage
		if args != "" {
			raw = json.RawMessage(args)
		}
		b, _ := json.Marshal(a.Do(execute, raw))
		return string(b)
	}

	if got := do("add_hostfwd", fmt.Sprintf(`{"proto": "tcp", "host_addr": "127.0.0.1", "host_port": %d, "guest_port": 80}`, port)); got != `{"return":{"id":1}}` {
		t.Fatalf("add_hostfwd: %s", got)
	}
	f, err := ParseForward(fmt.Sprintf("127.0.0.1:%d:80", port))
	if err != nil {
		t.Fatal(err)
	}
	if got := w.gw.Forwards(); len(got) != 1 || got[0] != f {
		t.Fatalf("gateway forwards after add_hostfwd: %v, want [%s]", got, f)
	}
	if err := w.gw.AddForward(f); !errors.Is(err, ErrForwardExists) {
		t.Fatalf("AddForward of the forward add_hostfwd added: %v, want ErrForwardExists", err)
	}
	if err := w.gw.RemoveForward(f); err != nil {
		t.Fatal(err)
	}
	if got := do("list_hostfwd", ""); got != `{"return":{"entries":[]}}` {
		t.Errorf("list_hostfwd after RemoveForward: %s, want no entries", got)
	}
	if got := do("remove_hostfwd", `{"id": 1}`); !strings.Contains(got, "id 1 not found") {
		t.Errorf("remove_hostfwd of a forward removed through the gateway: %s, want id 1 not found", got)
	}
	// And the other way: added through the gateway, add_hostfwd of the
	// same forward is refused with the gateway's error.
	if err := w.gw.AddForward(f); err != nil {
		t.Fatal(err)
	}
	if got := do("add_hostfwd", fmt.Sprintf(`{"proto": "tcp", "host_addr": "127.0.0.1", "host_port": %d, "guest_port": 80}`, port)); !strings.Contains(got, "forward already exists") {
		t.Errorf("add_hostfwd of a forward the gateway has: %s, want already exists", got)
	}
}
