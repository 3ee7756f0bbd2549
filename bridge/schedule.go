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

// scheduleStore keeps sends deferred to the end of quiet hours. The work
// lives in the database, so it survives restarts, and the event that caused
// it is acked: a deferred event never sits in JetStream holding one of the
// consumer's MaxAckPending slots for hours.
type scheduleStore interface {
	Defer(ctx context.Context, rec storage.SendRecord, due time.Time, payload []byte) (bool, error)
	DueDeferred(ctx context.Context, now time.Time, max int) ([]storage.Deferred, error)
	NextDue(ctx context.Context) (time.Time, bool, error)
	Reschedule(ctx context.Context, d storage.Deferred, next time.Time) error
}

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
	ss, ok := b.cfg.Store.(scheduleStore)
	if !ok {
		return false, fmt.Errorf("defer send: the store has no schedule")
	}
	var w deferredWork
	w.Event.ID, w.Event.Source, w.Event.Key = ev.ID, ev.Source, ev.key
	w.Event.Type, w.Event.Subject, w.Event.Time = ev.Type, ev.Subject, ev.Time
	data, err := json.Marshal(ev.Data)
	if err != nil {
		return false, fmt.Errorf("defer send: encode event data: %w", err)
	}
	w.Event.Data = data
	w.Rule, w.UserID, w.OpenID, w.RK = t.rule.Name, t.userID, rec.OpenID, t.rk
	payload, _ := json.Marshal(w)
	deferred, err := ss.Defer(ctx, rec, due, payload)
	if err != nil {
		return false, err
	}
	if deferred {
		b.metrics.deferred.Inc()
		log.Info("quiet hours: send deferred", "until", due)
		b.wakeSchedule()
	}
	return true, nil
}

func (b *Bridge) wakeSchedule() {
	select {
	case b.scheduleWake <- struct{}{}:
	default:
	}
}

// runSchedule runs deferred sends as they come due, until ctx ends.
func (b *Bridge) runSchedule(ctx context.Context) {
	ss, ok := b.cfg.Store.(scheduleStore)
	if !ok {
		return
	}
	for {
		wait := b.cfg.SchedulePoll
		if due, ok, err := ss.NextDue(ctx); err == nil && ok {
			wait = min(max(due.Sub(b.cfg.Now()), 0), b.cfg.SchedulePoll)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-b.scheduleWake:
			timer.Stop()
			continue
		case <-timer.C:
		}
		b.runDue(ctx, ss)
	}
}

// runDue runs every deferred send that is due, a batch at a time.
func (b *Bridge) runDue(ctx context.Context, ss scheduleStore) {
	for ctx.Err() == nil {
		due, err := ss.DueDeferred(ctx, b.cfg.Now(), 256)
		if err != nil {
			b.log.Warn("read schedule", "err", err)
			return
		}
		if len(due) == 0 {
			return
		}
		if !b.handlers.enter() {
			return
		}
		var wg sync.WaitGroup
		for _, d := range due {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b.runDeferred(ctx, ss, d)
			}()
		}
		wg.Wait()
		b.handlers.leave()
	}
}

func (b *Bridge) runDeferred(ctx context.Context, ss scheduleStore, d storage.Deferred) {
	ctx = context.WithoutCancel(ctx)
	var w deferredWork
	if err := json.Unmarshal(d.Payload, &w); err != nil {
		b.log.Error("unreadable deferred send dropped", "key", d.Key, "err", err)
		_ = ss.Reschedule(ctx, d, time.Time{})
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
		if _, err := b.finish(ctx, rec, storage.StateFailed, reasonInvalidData, "rule "+w.Rule+" is no longer in the rules", storage.KeepCredit); err == nil {
			_ = ss.Reschedule(ctx, d, time.Time{})
		}
		return
	}
	t.rule = rule
	t.rendered, t.renderErr = rule.Render(ev.Event)
	final, err := b.deliver(ctx, log, ev, t)
	switch {
	case err != nil:
		log.Warn("deferred send: state error; will retry", "err", err)
		_ = ss.Reschedule(ctx, d, b.cfg.Now().Add(b.cfg.RetryBase))
	case final:
		_ = ss.Reschedule(ctx, d, time.Time{})
	default:
		// A transient failure: try again with the same backoff as events.
		rec := 1
		if r, ok, _ := b.sendRecord(ctx, d.Key); ok {
			rec = r.Attempts
		}
		_ = ss.Reschedule(ctx, d, b.cfg.Now().Add(backoff{b.cfg.RetryBase, b.cfg.RetryMax}.WaitTime(uint64(rec))))
	}
}

type recordReader interface {
	Send(ctx context.Context, key string) (storage.SendRecord, bool, error)
}

func (b *Bridge) sendRecord(ctx context.Context, key string) (storage.SendRecord, bool, error) {
	rr, ok := b.cfg.Store.(recordReader)
	if !ok {
		return storage.SendRecord{}, false, nil
	}
	return rr.Send(ctx, key)
}
