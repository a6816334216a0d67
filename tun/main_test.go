package tun

import (
	"os"
	"testing"

	"github.com/ustacknet/ustack/internal/testnet"
)

// TestMain fails the package if a test leaks a goroutine or a gVisor
// reference-counted object (a PacketBuffer or its buffer chunks) that was
// never DecRef'd.
func TestMain(m *testing.M) {
	os.Exit(testnet.LeakCheckedMain(m, true))
}
