package api

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// transport is how a Server is reached.
type transport int

const (
	unixSocket transport = iota // HTTP over a unix socket at the path
	tcpToken                    // HTTP over localhost TCP; the path is a token file
)

// endpoint is a listening transport.
type endpoint struct {
	ln     net.Listener
	token  string       // required of every request, if not empty
	remove func() error // removes the socket or token file
}

// tokenFile is the content of a token file, as JSON.
type tokenFile struct {
	Addr  string `json:"addr"`  // 127.0.0.1:PORT
	Token string `json:"token"` // hex, 64 digits
}

// readTokenFile reads and checks the token file at path.
func readTokenFile(path string) (tokenFile, error) {
	var tf tokenFile
	b, err := os.ReadFile(path)
	if err != nil {
		return tf, err
	}
	if err := json.Unmarshal(b, &tf); err != nil || tf.Addr == "" || tf.Token == "" {
		return tf, fmt.Errorf("api: %s is not a ustack API token file", path)
	}
	return tf, nil
}

// listenToken listens on a free port of 127.0.0.1 and writes the token
// file at path.
func listenToken(path string) (endpoint, error) {
	if _, err := os.Lstat(path); err == nil {
		tf, err := readTokenFile(path)
		if err != nil {
			return endpoint{}, fmt.Errorf("api: %s exists and is not a ustack API token file; choose another --api path", path)
		}
		if c, err := net.DialTimeout("tcp", tf.Addr, time.Second); err == nil {
			c.Close()
			return endpoint{}, fmt.Errorf("api: %s is in use by another running ustack; choose another --api path", path)
		}
		if err := os.Remove(path); err != nil {
			return endpoint{}, fmt.Errorf("api: removing stale token file: %w", err)
		}
	}
	var raw [32]byte
	rand.Read(raw[:]) // never fails (crypto/rand)
	token := hex.EncodeToString(raw[:])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return endpoint{}, fmt.Errorf("api: listening on 127.0.0.1: %w", err)
	}
	b, _ := json.Marshal(tokenFile{Addr: ln.Addr().String(), Token: token})
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		ln.Close()
		return endpoint{}, fmt.Errorf("api: creating token file: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		ln.Close()
		os.Remove(path)
		return endpoint{}, fmt.Errorf("api: writing token file: %w", err)
	}
	return endpoint{ln: ln, token: token, remove: func() error { return os.Remove(path) }}, nil
}

// requireToken answers 401 to requests without "Authorization: Bearer
// token".
func requireToken(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			writeError(w, &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized,
				Message: "api: missing or wrong token: send the token of the API's token file as \"Authorization: Bearer TOKEN\""})
			return
		}
		next.ServeHTTP(w, r)
	})
}
