package api

import "errors"

// defaultTransport is localhost TCP with a token on Windows, where AF_UNIX
// sockets may be missing (before Windows 10 1803) and carry no file mode.
const defaultTransport = tcpToken

// listenUnix is not used on Windows.
func listenUnix(string) (endpoint, error) {
	return endpoint{}, errors.New("api: unix sockets are not used on Windows")
}
