package bridge

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// progress remembers when the event consumer last delivered an event it
// had not delivered before, to tell a busy consumer from a stuck one.
type progress struct {
	mu        sync.Mutex
	delivered uint64    // highest stream sequence delivered
	since     time.Time // when it last moved, or events last ran out
}

// Progress reports a consumer that has delivered nothing new for
// StallAfter although events are waiting: every slot is held by events
// that keep failing, or no bridge pulls. It is nil while events flow or
// none wait. Any bridge sees the consumer all bridges share.
func (b *Bridge) Progress(ctx context.Context) error {
	cons, err := b.js().Consumer(ctx, b.cfg.EventStream, b.cfg.Consumer)
	if err != nil {
		return fmt.Errorf("event consumer: %w", err)
	}
	info := cons.CachedInfo()
	now := b.cfg.Now()
	p := &b.progress
	p.mu.Lock()
	defer p.mu.Unlock()
	if info.NumPending == 0 || info.Delivered.Stream != p.delivered || p.since.IsZero() {
		p.delivered, p.since = info.Delivered.Stream, now
		return nil
	}
	if stuck := now.Sub(p.since); stuck >= b.cfg.StallAfter {
		return fmt.Errorf("event consumer stalled: %d events waiting, nothing new delivered for %s (%d held, awaiting ack)",
			info.NumPending, stuck.Round(time.Second), info.NumAckPending)
	}
	return nil
}
