package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// repeatLimiter logs a line and then holds back identical lines (same
// message and attributes) for a while, saying with the next one how many it
// held back. An event that fails the same way on every redelivery, or many
// poison events at once, must not grow the log by megabytes a minute.
type repeatLimiter struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	seen map[string]*repeated
}

type repeated struct {
	last       time.Time
	suppressed int
}

// maxRepeatKeys bounds the memory of lines seen; past it the oldest
// entries are forgotten (a line then logs again, which is harmless).
const maxRepeatKeys = 4096

func newRepeatLimiter(every time.Duration, now func() time.Time) *repeatLimiter {
	return &repeatLimiter{every: every, now: now, seen: map[string]*repeated{}}
}

func (r *repeatLimiter) log(l *slog.Logger, level slog.Level, msg string, args ...any) {
	if !l.Enabled(context.Background(), level) {
		return
	}
	key := msg + fmt.Sprint(args...)
	now := r.now()
	r.mu.Lock()
	e := r.seen[key]
	if e != nil && now.Sub(e.last) < r.every {
		e.suppressed++
		r.mu.Unlock()
		return
	}
	held := 0
	if e != nil {
		held = e.suppressed
		e.last, e.suppressed = now, 0
	} else {
		if len(r.seen) >= maxRepeatKeys {
			r.forgetOldest(now)
		}
		r.seen[key] = &repeated{last: now}
	}
	r.mu.Unlock()
	if held > 0 {
		args = append(args, "repeated", held)
	}
	l.Log(context.Background(), level, msg, args...)
}

// forgetOldest drops entries older than the window, or half of them when
// all are recent.
func (r *repeatLimiter) forgetOldest(now time.Time) {
	for k, e := range r.seen {
		if now.Sub(e.last) >= r.every {
			delete(r.seen, k)
		}
	}
	for k := range r.seen {
		if len(r.seen) < maxRepeatKeys/2 {
			break
		}
		delete(r.seen, k)
	}
}

func (r *repeatLimiter) warn(l *slog.Logger, msg string, args ...any) {
	r.log(l, slog.LevelWarn, msg, args...)
}
