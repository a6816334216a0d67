//go:build !windows

package errno

const useWSA = false
