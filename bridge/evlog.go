package bridge

import (
	"context"
	"log/slog"
)

// evlog logs with an event's attributes (and a recipient's), built only
// when a line is written. slog's With formats its attributes up front,
// which cost every event CPU although most events log nothing.
type evlog struct {
	l          *slog.Logger
	ev         *event
	rule, user string
}

func (e evlog) forTask(t task) evlog {
	e.rule, e.user = t.rule.Name, t.userID
	return e
}

func (e evlog) log(level slog.Level, msg string, args ...any) {
	ctx := context.Background()
	if !e.l.Enabled(ctx, level) {
		return
	}
	attrs := make([]any, 0, 8+len(args))
	attrs = append(attrs, "event_id", e.ev.ID, "event_type", e.ev.Type)
	if e.ev.Source != "" {
		attrs = append(attrs, "event_source", e.ev.Source)
	}
	if e.rule != "" {
		attrs = append(attrs, "rule", e.rule, "user_id", e.user)
	}
	e.l.Log(ctx, level, msg, append(attrs, args...)...)
}

func (e evlog) Debug(msg string, args ...any) { e.log(slog.LevelDebug, msg, args...) }
func (e evlog) Info(msg string, args ...any)  { e.log(slog.LevelInfo, msg, args...) }
func (e evlog) Warn(msg string, args ...any)  { e.log(slog.LevelWarn, msg, args...) }
func (e evlog) Error(msg string, args ...any) { e.log(slog.LevelError, msg, args...) }
