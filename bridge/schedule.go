package bridge

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
)

// deferredWork is what the schedule keeps of a deferred send: the event and
// the recipient. The rule is looked up by name when the work runs, so the
// rules in force then render it.
type deferredWork struct {
	Event struct {
		ID      string          `json:"id"`
		Source  string          `json:"source,omitempty"`
		Key     string          `json:"key,omitempty"` // the identity; "" in work deferred by older versions: the id
		Type    string          `json:"type"`
		Subject string          `json:"subject"`
		Time    time.Time       `json:"time"`
		Data    json.RawMessage `json:"data"`
	} `json:"event"`
	Rule   string `json:"rule"`
	UserID string `json:"user_id,omitempty"`
	OpenID string `json:"openid,omitempty"`
	RK     string `json:"rk"`
}

// deferUntil puts a send in the schedule. The recipient counts as handled
// for the event: its outcome comes when the schedule runs it.
func (b *Bridge) deferUntil(ctx context.Context, log evlog, ev *event, t task, rec storage.SendRecord, due time.Time) (bool, error) {
	var w deferredWork
	w.Event.ID, w.Event.Source, w.Event.Key = ev.ID, ev.Source, ev.key
	w.Event.Type, w.Event.Subject, w.Event.Time = ev.Type, ev.Subject, ev.Time
	data, err := json.Marshal(ev.Data)
	if err != nil {
		return false, fmt.Errorf("defer send: encode event data: %w", err)
	}
	w.Event.Data = data
	// The recipient as the rule named them: when the send comes due, their
	// channel is chosen again.
	w.Rule, w.UserID, w.OpenID, w.RK = t.rule.Name, t.userID, t.openID, t.rk
	payload, _ := json.Marshal(w)
	deferred, err := b.cfg.Store.Defer(ctx, rec, due, payload)
	if err != nil {
		return false, err
	}
	if deferred {
		b.metrics.deferred.Inc()
		log.Info("quiet hours: send deferred", "until", due)
	}
	return true, nil
}

// runSchedule runs deferred sends as they come due, until ctx ends. A
// failure to read or settle the schedule is logged and counted, and the
// loop goes on: the work stays in the state.
func (b *Bridge) runSchedule(ctx context.Context) {
	for ctx.Err() == nil {
		due, err := b.cfg.Store.WaitDue(ctx, 256, b.cfg.SchedulePoll)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			b.scheduleError("read the schedule", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if len(due) == 0 || !b.handlers.enter() {
			continue
		}
		var wg sync.WaitGroup
		for _, d := range due {
			wg.Add(1)
			b.taskWorkers.do(func() {
				defer wg.Done()
				b.runDeferred(ctx, d)
			})
		}
		wg.Wait()
		b.handlers.leave()
	}
}

func (b *Bridge) scheduleError(what string, err error) {
	b.metrics.scheduleErrs.Inc()
	b.repeats.warn(b.log, "schedule: "+what, "err", err)
}

// settleDeferred takes d off the schedule or moves it.
func (b *Bridge) settleDeferred(ctx context.Context, d storage.Deferred, next time.Time) {
	if err := b.cfg.Store.Settle(ctx, d, next); err != nil {
		b.scheduleError("settle a deferred send", err)
	}
}

func (b *Bridge) runDeferred(ctx context.Context, d storage.Deferred) {
	ctx = context.WithoutCancel(ctx)
	var w deferredWork
	if err := json.Unmarshal(d.Payload, &w); err != nil {
		b.log.Error("unreadable deferred send dropped", "key", d.Key, "err", err)
		b.settleDeferred(ctx, d, time.Time{})
		return
	}
	ev := &event{Event: &rules.Event{ID: w.Event.ID, Source: w.Event.Source, Type: w.Event.Type, Subject: w.Event.Subject,
		Time: w.Event.Time}, key: cmp.Or(w.Event.Key, w.Event.ID)}
	if len(w.Event.Data) > 0 {
		dec := json.NewDecoder(bytes.NewReader(w.Event.Data))
		dec.UseNumber()
		_ = dec.Decode(&ev.Data)
	}
	log := evlog{l: b.log, ev: ev}
	var rule *rules.Rule
	for _, r := range b.rules.Load().Rules {
		if r.Name == w.Rule {
			rule = r
		}
	}
	t := task{userID: w.UserID, openID: w.OpenID, rk: w.RK, key: d.Key, scheduled: true}
	if rule == nil {
		// The rule was removed while the send waited: nothing renders it.
		rec := storage.SendRecord{Key: d.Key, EventID: ev.key, EventType: ev.Type, Rule: w.Rule, UserID: w.UserID, OpenID: w.OpenID}
		if _, err := b.finish(ctx, rec, storage.StateFailed, reasonInvalidData, "rule "+w.Rule+" is no longer in the rules", storage.KeepCredit); err != nil {
			b.scheduleError("record a deferred send's outcome", err)
			b.settleDeferred(ctx, d, b.cfg.Now().Add(b.cfg.RetryBase))
			return
		}
		b.settleDeferred(ctx, d, time.Time{})
		return
	}
	t.rule = rule
	t.routes = routesFor(rule, ev.Event)
	final, err := b.deliver(ctx, log, ev, t)
	switch {
	case err != nil:
		b.scheduleError("deferred send; will retry", err)
		b.settleDeferred(ctx, d, b.cfg.Now().Add(max(time.Until(retryAtOf(err)), b.cfg.RetryBase)))
	case final:
		b.settleDeferred(ctx, d, time.Time{})
	default:
		// A transient failure: try again with the same backoff as events.
		attempts := 1
		if r, ok, err := b.cfg.Store.Send(ctx, d.Key); err != nil {
			b.scheduleError("read a deferred send's record", err)
		} else if ok {
			attempts = r.Attempts
		}
		b.settleDeferred(ctx, d, b.cfg.Now().Add(backoff{b.cfg.RetryBase, b.cfg.RetryMax}.WaitTime(uint64(attempts))))
	}
}
