package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/wgtun"
	"github.com/ustacknet/ustack/wgtun/wgtest"
	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	serverAddr = netip.MustParsePrefix("198.18.50.1/24")
	clientAddr = netip.MustParsePrefix("198.18.50.2/24")
)

// server is the other end of the tunnel, also in user space: wireguard-go
// over a ustack stack serving HTTP on port 80 and DNS on port 53 (which
// knows one name, hello.test).
type server struct {
	pub  wgtun.Key
	port uint16
}

func startServer(t *testing.T, clientPub wgtun.Key) *server {
	t.Helper()
	priv, pub, err := wgtest.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	tdev, err := wgtun.New(wgtun.Config{Stack: stack.Config{Addrs: []netip.Prefix{serverAddr}}})
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), wgtest.Quiet)
	t.Cleanup(dev.Close)
	uapi := fmt.Sprintf("private_key=%s\nlisten_port=0\npublic_key=%s\nallowed_ip=%s/32\n",
		hex.EncodeToString(priv[:]), hex.EncodeToString(clientPub[:]), clientAddr.Addr())
	if err := dev.IpcSet(uapi); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	port, err := wgtest.ListenPort(dev)
	if err != nil {
		t.Fatal(err)
	}
	st := tdev.Stack()
	l, err := st.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "hello %s through WireGuard", r.Host)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	pc, err := st.ListenPacket("udp", ":53")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go serveDNS(pc)
	return &server{pub: pub, port: port}
}

// serveDNS answers A queries for hello.test with the server's address and
// everything else with NXDOMAIN.
func serveDNS(pc net.PacketConn) {
	buf := make([]byte, 512)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError}
		found := strings.EqualFold(q.Name.String(), "hello.test.") && q.Type == dnsmessage.TypeA
		if found || (strings.EqualFold(q.Name.String(), "hello.test.") && q.Type == dnsmessage.TypeAAAA) {
			rh.RCode = dnsmessage.RCodeSuccess
		}
		b := dnsmessage.NewBuilder(nil, rh)
		b.EnableCompression()
		b.StartQuestions()
		b.Question(q)
		b.StartAnswers()
		if found {
			b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: serverAddr.Addr().As4()})
		}
		out, err := b.Finish()
		if err == nil {
			pc.WriteTo(out, from)
		}
	}
}

// writeConfig writes a client wg-quick file for srv and returns its path.
func writeConfig(t *testing.T, priv wgtun.Key, srv *server) string {
	t.Helper()
	text := fmt.Sprintf(`# written by the test
[Interface]
PrivateKey = %s
Address = %s
DNS = %s

[Peer]
PublicKey = %s
AllowedIPs = 198.18.50.0/24
Endpoint = 127.0.0.1:%d
PersistentKeepalive = 25
`, priv, clientAddr, serverAddr.Addr(), srv.pub, srv.port)
	path := filepath.Join(t.TempDir(), "wg0.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFetch(t *testing.T) {
	priv, pub, err := wgtest.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, pub)
	config := writeConfig(t, priv, srv)
	last := time.Now()
	for _, tc := range []struct {
		name, url  string
		wantCode   int
		wantOut    string
		wantStderr string
	}{
		{"by address", "http://198.18.50.1/", 0, "hello 198.18.50.1 through WireGuard", "HTTP/1.1 200 OK"},
		{"by name through the tunnel's DNS", "http://hello.test/", 0, "hello hello.test through WireGuard", "HTTP/1.1 200 OK"},
		{"not found", "http://198.18.50.1/missing", 1, "404 page not found\n", "http://198.18.50.1/missing: 404 Not Found"},
		{"unknown name", "http://nowhere.test/", 1, "", "lookup nowhere.test: no such host"},
		{"outside AllowedIPs", "http://198.18.60.1/", 1, "", "198.18.60.1"},
	} {
		// Each run is a new client with the same key. WireGuard rejects a
		// handshake whose timestamp is not later than the last one from
		// that key, and wireguard-go rounds the timestamp's nanoseconds
		// down to a multiple of 2^24 (about 17 ms): the clock itself is
		// the condition, so wait for it to pass the next such step after
		// the previous run, whose handshakes all came before it ended.
		time.Sleep(time.Until(nextHandshakeStamp(last)))
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run([]string{"-timeout", "20s", config, tc.url}, &stdout, &stderr)
			if code != tc.wantCode || stdout.String() != tc.wantOut || !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Fatalf("run = %d, stdout %q, stderr %q; want %d, %q, stderr containing %q", code, stdout.String(), stderr.String(), tc.wantCode, tc.wantOut, tc.wantStderr)
			}
		})
		last = time.Now()
	}
}

// nextHandshakeStamp returns the first instant whose WireGuard handshake
// timestamp (TAI64N, nanoseconds rounded down to a multiple of 2^24) is
// later than t's.
func nextHandshakeStamp(t time.Time) time.Time {
	const step = 1 << 24
	next := (int64(t.Nanosecond())/step + 1) * step
	if next >= int64(time.Second) {
		return time.Unix(t.Unix()+1, 0)
	}
	return time.Unix(t.Unix(), next)
}

// Bad usage and bad configuration files exit with 2 and say what is wrong.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.conf")
	os.WriteFile(bad, []byte("[Interface]\nPrivateKey = nope\n"), 0o600)
	noAddr := filepath.Join(dir, "noaddr.conf")
	os.WriteFile(noAddr, []byte("[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n[Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n"), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no arguments", nil, "usage: wgfetch"},
		{"one argument", []string{bad}, "usage: wgfetch"},
		{"bad flag", []string{"-nope", bad, "http://x/"}, "flag provided but not defined"},
		{"bad timeout", []string{"-timeout", "-1s", bad, "http://x/"}, "-timeout -1s: want a positive duration"},
		{"missing file", []string{filepath.Join(dir, "none.conf"), "http://x/"}, "none.conf: no such file"},
		{"bad key", []string{bad, "http://x/"}, "bad.conf:2: PrivateKey: not a WireGuard key"},
		{"no address", []string{noAddr, "http://x/"}, "noaddr.conf:1: [Interface] has no Address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("run = %d, stderr %q; want 2 and %q", code, stderr.String(), tc.want)
			}
		})
	}
}
