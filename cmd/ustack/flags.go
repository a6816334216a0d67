package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// logLevel is a --log-level flag value.
type logLevel struct{ slog.Level }

func (l *logLevel) Set(s string) error {
	switch strings.ToLower(s) {
	case "debug":
		l.Level = slog.LevelDebug
	case "info":
		l.Level = slog.LevelInfo
	case "warn", "warning":
		l.Level = slog.LevelWarn
	case "error":
		l.Level = slog.LevelError
	default:
		return fmt.Errorf("unknown log level %q; want debug, info, warn or error", s)
	}
	return nil
}

func (l *logLevel) String() string { return strings.ToLower(l.Level.String()) }
func (l *logLevel) Type() string   { return "level" }

func (l *logLevel) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l.Level}))
}
