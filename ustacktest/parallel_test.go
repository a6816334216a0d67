//go:build linux

package ustacktest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/ustacktest"
	"golang.org/x/sys/unix"
)

// TestParallelBeds runs eight beds at once (TestMain raises -parallel to
// 8): every subtest builds its bed, then waits until all eight exist
// before using it. Each has the same addresses, the same range and the
// same server port; if they shared a namespace, a stack or a port pool,
// the listens would collide or the ports would interleave.
func TestParallelBeds(t *testing.T) {
	const beds = 8
	var (
		mu    sync.Mutex
		nss   = map[uint64]string{}
		built sync.WaitGroup
		all   = make(chan struct{})
	)
	built.Add(beds)
	go func() { built.Wait(); close(all) }()
	for i := range beds {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			// A subtest that ends early still counts as built, so that the
			// others do not wait for it.
			var once sync.Once
			done := func() { once.Do(built.Done) }
			defer done()
			bed := ustacktest.New(t, ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40003}})
			// The kernel's namespace of this bed, by inode.
			var st unix.Stat_t
			if err := bed.Do(func() error { return unix.Stat("/proc/thread-self/ns/net", &st) }); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			if other, ok := nss[st.Ino]; ok {
				t.Errorf("bed %d shares its namespace with bed %s", i, other)
			}
			nss[st.Ino] = fmt.Sprint(i)
			mu.Unlock()
			done()
			select {
			case <-all:
			case <-time.After(30 * time.Second):
				t.Fatalf("the other beds were not built within 30s: are 8 subtests running at once (-parallel)?")
			}

			server := byeServer(t, bed, "198.18.0.1:7")
			rs, err := bed.Churn(context.Background(), server, ustacktest.ChurnOptions{N: 10, Close: ustacktest.ServerCloses, Exchange: hello})
			if err != nil {
				t.Fatal(err)
			}
			checkAllOK(t, rs)
			want := seqPorts(40000, 40003, 10)
			if diff := cmp.Diff(want, ports(rs)); diff != "" {
				t.Errorf("churn ports (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, bed.SeenPorts(server)); diff != "" {
				t.Errorf("ports the server saw (-want +got):\n%s", diff)
			}
			// The capture holds this bed's traffic only: 10 connections.
			path := filepath.Join(t.TempDir(), "bed.pcap")
			if err := bed.Capture(path); err != nil {
				t.Fatal(err)
			}
			if n := countSYNs(t, path); n != 10 {
				t.Errorf("the capture has %d SYNs to the server, want 10", n)
			}
		})
	}
}

// countSYNs counts the TCP SYNs without ACK to port 7 in a pcap file
// (LINKTYPE_RAW, IPv4).
func countSYNs(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for off := 24; off+16 <= len(b); {
		incl := int(uint32(b[off+8]) | uint32(b[off+9])<<8 | uint32(b[off+10])<<16 | uint32(b[off+11])<<24)
		pkt := b[off+16 : off+16+incl]
		off += 16 + incl
		if len(pkt) < 40 || pkt[0]>>4 != 4 || pkt[9] != unix.IPPROTO_TCP {
			continue
		}
		tcp := pkt[int(pkt[0]&0xf)*4:]
		if tcp[2] == 0 && tcp[3] == 7 && tcp[13]&0x12 == 0x02 {
			n++
		}
	}
	return n
}
