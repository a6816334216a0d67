package tun

import "testing"

// TestOpenRejectsBadConfig checks that Open validates before it touches
// anything, so it needs no privileges.
func TestOpenRejectsBadConfig(t *testing.T) {
	old := devPath
	devPath = "/nonexistent/must-not-be-opened"
	defer func() { devPath = old }()
	_, err := Open(Config{MTU: 40})
	if want := "tun: invalid Config.MTU 40: want 0 (for 1500) or 68..65535"; err == nil || err.Error() != want {
		t.Errorf("Open error = %v, want %q", err, want)
	}
}
