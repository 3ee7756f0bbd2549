package bridge

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// watermillLogger adapts watermill's logging to slog. Unlike watermill's own
// adapter it asks the handler whether a level is enabled before building
// anything: watermill traces every message several times, and building
// those records (then dropping them) cost 5% of the bridge's CPU at load.
// Watermill's info lines (handlers starting and stopping) are logged at
// debug, and its errors (every nack of an event left for a retry is one) at
// warn: the bridge logs the failures that matter itself.
type watermillLogger struct {
	log    *slog.Logger
	fields []any
}

func newWatermillLogger(log *slog.Logger) watermill.LoggerAdapter {
	return watermillLogger{log: log}
}

const slogTrace = slog.LevelDebug - 4

func (l watermillLogger) emit(level slog.Level, msg string, fields watermill.LogFields, extra ...any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	args := append(append([]any(nil), l.fields...), extra...)
	for k, v := range fields {
		args = append(args, k, v)
	}
	l.log.Log(ctx, level, msg, args...)
}

func (l watermillLogger) Error(msg string, err error, fields watermill.LogFields) {
	level := slog.LevelWarn
	if msg == "Handler returned error" {
		// A nack: the bridge logged why, once, with rate limiting.
		level = slog.LevelDebug
	}
	l.emit(level, msg, fields, "err", err)
}
func (l watermillLogger) Info(msg string, fields watermill.LogFields) {
	l.emit(slog.LevelDebug, msg, fields)
}
func (l watermillLogger) Debug(msg string, fields watermill.LogFields) {
	l.emit(slog.LevelDebug, msg, fields)
}
func (l watermillLogger) Trace(msg string, fields watermill.LogFields) {
	l.emit(slogTrace, msg, fields)
}

func (l watermillLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	next := watermillLogger{log: l.log, fields: append([]any(nil), l.fields...)}
	for k, v := range fields {
		next.fields = append(next.fields, k, v)
	}
	return next
}
