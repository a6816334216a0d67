package api

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"syscall"

	"github.com/ustacknet/ustack/internal/errno"
	"github.com/ustacknet/ustack/portfwd"
)

// Codes of error answers, the "code" of {"error": ..., "code": ...}. They
// say the kind of error; the message says what exactly.
const (
	CodeBadRequest   = "bad_request"        // 400: a bad parameter or spec
	CodeUnauthorized = "unauthorized"       // 401: no or wrong token (Windows)
	CodeNoRoute      = "no_route"           // 404: no such route
	CodeNotFound     = "not_found"          // 404: no such forward
	CodeMethod       = "method_not_allowed" // 405: a method the route does not take
	CodeExists       = "exists"             // 409: the forward exists already
	CodeInUse        = "in_use"             // 409: the forward's host address is taken
	CodeInternal     = "internal"           // 500: anything else
	CodeNotServed    = "not_served"         // 501: a route this instance does not serve
	CodeClosed       = "closed"             // 503: shutting down
)

// ErrBadRequest and ErrNotServed are matched (errors.Is) by the client's
// errors for answers with CodeBadRequest and CodeNotServed.
var (
	ErrBadRequest = errors.New("api: bad request")
	ErrNotServed  = errors.New("api: route not served by this instance")
)

// Error is an error answer: the server writes it, and the client returns
// it (find it with errors.As). Its message is the server's, which for a
// forward is the library's own (a bad spec gives portfwd.Parse's message).
//
// errors.Is matches, by Code: portfwd.ErrExists (CodeExists),
// portfwd.ErrNotFound (CodeNotFound), syscall.EADDRINUSE (CodeInUse; on
// Windows its Winsock form too), net.ErrClosed (CodeClosed),
// ErrBadRequest (CodeBadRequest) and ErrNotServed (CodeNotServed).
type Error struct {
	Status  int    // HTTP status code
	Code    string // a Code constant; "" if the answer had none
	Message string // what was wrong, and what is allowed
}

// Error returns the server's message.
func (e *Error) Error() string { return e.Message }

// Is matches the sentinel errors of e's Code (see Error).
func (e *Error) Is(target error) bool {
	switch e.Code {
	case CodeExists:
		return target == portfwd.ErrExists
	case CodeNotFound:
		return target == portfwd.ErrNotFound
	case CodeInUse:
		return target == syscall.EADDRINUSE || errno.Is(target, syscall.EADDRINUSE)
	case CodeClosed:
		return target == net.ErrClosed
	case CodeBadRequest:
		return target == ErrBadRequest
	case CodeNotServed:
		return target == ErrNotServed
	}
	return false
}

// errorBody is the JSON of an error answer.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// writeError answers e.
func writeError(w http.ResponseWriter, e *Error) {
	writeJSON(w, e.Status, errorBody{Error: e.Message, Code: e.Code})
}

// writeJSON writes v as indented JSON with the status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// forwardError classifies an error of a portfwd.Manager.
func forwardError(err error) *Error {
	e := &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: err.Error()}
	switch {
	case errors.Is(err, portfwd.ErrExists):
		e.Status, e.Code = http.StatusConflict, CodeExists
	case errors.Is(err, portfwd.ErrNotFound):
		e.Status, e.Code = http.StatusNotFound, CodeNotFound
	case errno.Matches(err, syscall.EADDRINUSE):
		e.Status, e.Code = http.StatusConflict, CodeInUse
	case errors.Is(err, net.ErrClosed):
		e.Status, e.Code = http.StatusServiceUnavailable, CodeClosed
	}
	return e
}
