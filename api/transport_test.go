package api

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/portalloc"
)

// TestTokenTransport runs the Windows transport (localhost TCP with a
// token file) here, where it can be run.
func TestTokenTransport(t *testing.T) {
	a, err := portalloc.New(portalloc.Config{TCP: portalloc.PoolConfig{Range: portalloc.Range{First: 40000, Last: 40009}}})
	if err != nil {
		t.Fatal(err)
	}
	a.Pool(portalloc.TCP).Allocate(portalloc.Request{})
	path := filepath.Join(t.TempDir(), "api.token")
	srv, err := listen(path, Config{Ports: fakeSource{a}}, tcpToken)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); runtime.GOOS != "windows" && m != 0o600 {
		t.Errorf("token file mode %o, want 600", m)
	}
	tf, err := readTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tf.Addr, "127.0.0.1:") || len(tf.Token) != 64 {
		t.Errorf("token file %+v: want a 127.0.0.1 address and a 64-digit token", tf)
	}

	c := newClient(path, tcpToken)
	defer c.Close()
	got, err := c.Ports(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a.Snapshots(), got); diff != "" {
		t.Errorf("snapshots over the token transport (-want +got):\n%s", diff)
	}

	for _, tc := range []struct{ name, auth string }{
		{"no token", ""},
		{"wrong token", "Bearer " + strings.Repeat("0", 64)},
		{"token without Bearer", tf.Token},
		{"token with a suffix", "Bearer " + tf.Token + "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+tf.Addr+"/v1/ports", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("status %d, want 401", resp.StatusCode)
			}
		})
	}
	http.DefaultClient.CloseIdleConnections()

	if _, err := listen(path, Config{Ports: fakeSource{a}}, tcpToken); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second listen on a live token file: %v, want an 'in use' error", err)
	}
	srv.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("token file left behind after Close: %v", err)
	}
	if _, err := c.Ports(context.Background()); err == nil || !strings.Contains(err.Error(), "no ustack is serving") {
		t.Errorf("client with no server: %v", err)
	}
}

// TestTokenFileStaleAndForeign checks what listen does with a file that
// is already at the path.
func TestTokenFileStaleAndForeign(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "notes.txt")
	os.WriteFile(foreign, []byte("not ours"), 0o600)
	if _, err := listen(foreign, Config{}, tcpToken); err == nil || !strings.Contains(err.Error(), "not a ustack API token file") {
		t.Errorf("listen over a foreign file: %v", err)
	}
	stale := filepath.Join(dir, "stale.token")
	// Port 1 of 127.0.0.1: nothing listens there (it needs root to bind,
	// and no test binds it).
	os.WriteFile(stale, []byte(`{"addr":"127.0.0.1:1","token":"ab"}`), 0o600)
	srv, err := listen(stale, Config{Ports: fakeSource{}}, tcpToken)
	if err != nil {
		t.Fatalf("listen over a stale token file: %v", err)
	}
	srv.Close()
}
