package services

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServicesOnStack(t *testing.T) {
	st, err := stack.New(stack.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	g := NewGroup(slog.Default())
	defer g.Close()
	l, _ := st.Listen("tcp", "127.0.0.1:7")
	g.Echo(l)
	pc, _ := st.ListenPacket("udp", "127.0.0.1:7")
	g.EchoPacket(pc)
	hl, _ := st.Listen("tcp", "127.0.0.1:80")
	g.HTTP(hl, st.Ports)

	c, err := st.Dial("tcp", "127.0.0.1:7")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("tcp echo: %q %v", buf, err)
	}
	u, err := st.Dial("udp", "127.0.0.1:7")
	if err != nil {
		t.Fatal(err)
	}
	u.SetDeadline(time.Now().Add(5 * time.Second))
	u.Write([]byte("ping"))
	n, err := u.Read(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("udp echo: %q %v", buf[:n], err)
	}
	u.Close()

	tr := &http.Transport{DialContext: st.DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://127.0.0.1/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"<td>tcp</td><td>49152-65535</td><td>sequential</td>", "<td>udp</td>"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	// Close with a live connection: it must be closed too.
	g.Close()
	if _, err := c.Read(buf); err == nil {
		t.Error("echo connection still open after Group.Close")
	}
	c.Close()
	_ = portalloc.TCP
	_ = net.ErrClosed
}
