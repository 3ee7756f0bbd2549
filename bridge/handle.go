package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wxbridge/wxbridge/internal/failpoint"
	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
)

// task is one (rule, recipient) of an event.
type task struct {
	rule     *rules.Rule
	rendered *rules.Rendered
	// renderErr: the rule's data could not be rendered for this event; every
	// recipient fails with invalid_data.
	renderErr error
	// specErr: the recipients (or the rule's condition) could not be
	// evaluated for this event.
	specErr error
	userID  string
	openID  string
	// rk names the recipient within the rule ("u:<user>" or "o:<openid>").
	rk  string
	key string
	// scheduled: the task comes from the schedule at the end of quiet hours.
	scheduled bool
	// last: the event's only task; its outcome marks the event done.
	last bool
}

// retryLater nacks an event some of whose recipients will be retried.
type retryLater struct{ pending int }

func (e *retryLater) Error() string {
	return fmt.Sprintf("%d recipients will be retried on redelivery", e.pending)
}

// handleEvent processes one delivery. A nil return acks the event; an
// error nacks it with a backoff delay.
func (b *Bridge) handleEvent(ctx context.Context, msg *message.Message) error {
	outcome, err := b.processEvent(ctx, msg)
	if err != nil {
		var rl *retryLater
		if errors.As(err, &rl) {
			outcome = "retry"
		} else {
			outcome = "error"
		}
	}
	b.metrics.events.WithLabelValues(outcome).Inc()
	return err
}

func (b *Bridge) processEvent(ctx context.Context, msg *message.Message) (outcome string, err error) {
	ev, err := b.decodeEvent(msg)
	var be *badEvent
	if errors.As(err, &be) {
		b.log.Warn("dead letter", "subject", msg.Metadata.Get(mdSubject), "stream_seq", msg.Metadata.Get(mdStreamSeq), "reason", be.reason)
		if err := b.deadLetter(ctx, msg, be.reason); err != nil {
			return "", err
		}
		b.metrics.dead.Inc()
		return "dead", nil
	}
	if _, busy := b.inflight.LoadOrStore(ev.ID, struct{}{}); busy {
		return "", errInFlight
	}
	defer b.inflight.Delete(ev.ID)
	log := evlog{l: b.log, ev: ev}

	if _, done, err := b.cfg.Store.EventDone(ctx, ev.ID); err != nil {
		return "", err
	} else if done {
		return "duplicate", b.reportDuplicates(ctx, ev, msg.Metadata.Get(mdStreamSeq)+"."+msg.Metadata.Get(mdDelivered))
	}
	matched := b.rules.Load().Match(ev)
	if len(matched) == 0 {
		log.Debug("no rule matches")
		return "no_match", nil
	}
	tasks, err := b.plan(ctx, ev, matched)
	if err != nil {
		return "", err
	}
	if len(tasks) == 1 {
		// The common case runs in this goroutine, and its outcome and the
		// event's completion share a transaction.
		tasks[0].last = true
		b.tasks <- struct{}{}
		final, err := b.deliver(ctx, log, ev, tasks[0])
		<-b.tasks
		switch {
		case err != nil:
			return "", err
		case !final:
			return "", &retryLater{1}
		}
		failpoint.Hit("before-ack")
		return "done", nil
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		pending int
		errs    []error
	)
	for _, t := range tasks {
		b.tasks <- struct{}{} // freed by tasks of this or other events, which never wait for this loop
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-b.tasks }()
			final, err := b.deliver(ctx, log, ev, t)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if !final {
				pending++
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	if pending > 0 {
		return "", &retryLater{pending}
	}
	if err := b.cfg.Store.MarkEventDone(ctx, ev.ID, ev.Type); err != nil {
		return "", err
	}
	failpoint.Hit("before-ack")
	return "done", nil
}

// plan resolves every matched rule's recipients into tasks. A user reached
// twice by one rule (named, and through a role) gets one task.
func (b *Bridge) plan(ctx context.Context, ev *rules.Event, matched []rules.Matched) ([]task, error) {
	var tasks []task
	for _, m := range matched {
		r := m.Rule
		if m.Err != nil {
			tasks = append(tasks, task{rule: r, specErr: m.Err, rk: "when", key: storage.SendKey(ev.ID, r.Name, "when")})
			continue
		}
		rendered, renderErr := r.Render(ev)
		specs, specErr := r.Recipients(ev)
		if specErr != nil {
			tasks = append(tasks, task{rule: r, specErr: specErr, rk: "spec", key: storage.SendKey(ev.ID, r.Name, "spec")})
			continue
		}
		seen := map[string]bool{}
		add := func(userID, openID string) {
			rk := "u:" + userID
			if userID == "" {
				rk = "o:" + openID
			}
			if seen[rk] {
				return
			}
			seen[rk] = true
			tasks = append(tasks, task{rule: r, rendered: rendered, renderErr: renderErr,
				userID: userID, openID: openID, rk: rk, key: storage.SendKey(ev.ID, r.Name, rk)})
		}
		for _, rc := range specs {
			switch {
			case rc.UserID != "":
				add(rc.UserID, "")
			case rc.OpenID != "":
				add("", rc.OpenID)
			case rc.Role != "":
				members, err := b.cfg.Store.RoleMembers(ctx, rc.Role, rc.Scope)
				if err != nil {
					return nil, fmt.Errorf("members of role %s in %s: %w", rc.Role, rc.Scope, err)
				}
				for _, m := range members {
					add(m.UserID, "")
				}
			}
		}
	}
	return tasks, nil
}

// reportDuplicates answers an event that was already fully handled: each
// of its recipients gets a skipped/duplicate result, and nothing is sent.
func (b *Bridge) reportDuplicates(ctx context.Context, ev *rules.Event, delivery string) error {
	recs, err := b.cfg.Store.EventSends(ctx, ev.ID)
	if err != nil {
		return err
	}
	msgs := make([]storage.OutboxMessage, 0, len(recs))
	for _, rec := range recs {
		rec.State, rec.Reason, rec.Delivery = storage.StateSkipped, reasonDuplicate, ""
		msgs = append(msgs, b.resultMessage(rec, "dup."+delivery))
		b.metrics.result(rec.State, rec.Reason, 0)
	}
	b.log.Info("duplicate event: nothing sent", "event_id", ev.ID, "event_type", ev.Type, "recipients", len(recs))
	return b.cfg.Store.Enqueue(ctx, msgs...)
}

func attemptsLeft(rec storage.SendRecord, max int) bool { return rec.Attempts < max }
