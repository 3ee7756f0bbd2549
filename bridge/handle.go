package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/wxbridge/wxbridge/internal/failpoint"
	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
)

// task is one (rule, recipient) of an event.
type task struct {
	rule *rules.Rule
	// routes are the rule's channels, rendered for the event, in the order
	// they are tried.
	routes []route
	// preset is an outcome decided while planning, with no send to try: the
	// recipients could not be evaluated (failed/invalid_data), a spec named
	// nobody (skipped/no_recipient), the event named too many.
	preset *outcome
	userID string
	openID string
	// rk names the recipient within the rule ("u:<user>" or "o:<openid>",
	// or a name for a preset outcome).
	rk  string
	key string
	// scheduled: the task comes from the schedule at the end of quiet hours.
	scheduled bool
	// last: the event's only task; its outcome marks the event done.
	last bool
}

// outcome is a final state decided without WeChat.
type outcome struct {
	state, reason, detail string
}

// retryAt nacks an event whose sends wait for something that will come
// without them: the WeChat client to fetch an access token again, an
// official account's follower list. Nothing was tried, so no attempt is
// counted; the event comes back at about at.
type retryAt struct {
	at  time.Time
	err error
}

func (e *retryAt) Error() string { return "waiting: " + e.err.Error() }
func (e *retryAt) Unwrap() error { return e.err }

// retryAtOf is when an error asks its event to come back, or zero for the
// usual backoff.
func retryAtOf(err error) time.Time {
	var tw *retryAt
	if errors.As(err, &tw) {
		return tw.at
	}
	return time.Time{}
}

// errEventDone: the only recipient's lookup found the event fully handled
// before (a republication): it is reported as a duplicate.
var errEventDone = errors.New("event already handled")

// retryLater nacks an event some of whose recipients will be retried.
type retryLater struct{ pending int }

func (e *retryLater) Error() string {
	return fmt.Sprintf("%d recipients will be retried on redelivery", e.pending)
}

// permanent reports an error that every delivery of the event would meet
// again: the state refused one of its keys or values, or a message about it
// is too large to publish. Redelivering such an event would only hold a
// slot of the consumer forever; it goes to the dead-letter subject.
func permanent(err error) bool {
	return errors.Is(err, storage.ErrInvalid) || errors.Is(err, nats.ErrMaxPayload)
}

// handleEvent processes one delivery. A nil return acks the event; an
// error nacks it with a backoff delay.
func (b *Bridge) handleEvent(ctx context.Context, d *delivery) error {
	raw := rawOf(d)
	outcome, err := b.processEvent(ctx, raw)
	switch {
	case err == nil:
	case errors.Is(err, errInFlight):
		outcome = "in_flight"
	case permanent(err):
		// Would fail the same way on every delivery: dead-letter it.
		b.repeats.warn(b.log, "event can never be processed; dead letter", "stream_seq", raw.streamSeq, "err", err)
		if derr := b.deadLetter(ctx, raw, err.Error()); derr != nil {
			return derr
		}
		b.metrics.dead.Inc()
		outcome, err = "dead", nil
	default:
		var rl *retryLater
		if errors.As(err, &rl) {
			outcome = "retry"
		} else {
			outcome = "error"
			b.repeats.warn(b.log, "event will be retried", "stream_seq", raw.streamSeq, "delivered", raw.delivered, "err", err)
		}
		if at := retryAtOf(err); !at.IsZero() {
			d.retryAfter = max(time.Until(at), time.Second)
		}
	}
	b.metrics.events.WithLabelValues(outcome).Inc()
	return err
}

func (b *Bridge) processEvent(ctx context.Context, raw *rawEvent) (outcome string, err error) {
	ev, err := b.decodeEvent(raw)
	var be *badEvent
	if errors.As(err, &be) {
		b.repeats.warn(b.log, "dead letter", "subject", clip(raw.subject), "stream_seq", raw.streamSeq, "reason", be.reason)
		if err := b.deadLetter(ctx, raw, be.reason); err != nil {
			return "", err
		}
		b.metrics.dead.Inc()
		return "dead", nil
	}
	if _, busy := b.inflight.LoadOrStore(ev.key, struct{}{}); busy {
		return "", errInFlight
	}
	defer b.inflight.Delete(ev.key)
	log := evlog{l: b.log, ev: ev}
	ctx, sp := b.startEvent(ctx, ev)
	defer func() {
		sp.SetAttributes(attribute.String("wxbridge.outcome", outcome))
		if err != nil {
			sp.SetStatus(codes.Error, clipN(err.Error(), 200))
		}
		sp.End()
	}()

	duplicate := func() (string, error) {
		if raw.delivered > 1 {
			// This very message again (its ack was lost, or the bridge that
			// had it died after the outcomes were recorded): they were
			// published then. Only a new message with the same identity (a
			// republication) is told it is a duplicate.
			log.Debug("redelivery of an event already handled")
			return "done", nil
		}
		return "duplicate", b.reportDuplicates(ctx, ev, strconv.FormatUint(raw.streamSeq, 10)+"."+strconv.FormatUint(raw.delivered, 10))
	}
	mctx, endMatch := b.span(ctx, "wxbridge.match")
	matched := b.rules.Load().Match(ev.Event)
	if len(matched) == 0 {
		endMatch(nil)
		log.Debug("no rule matches")
		return "no_match", nil
	}
	tasks, err := b.plan(mctx, ev, matched)
	endMatch(err)
	if err != nil {
		return "", err
	}
	if len(tasks) > 1 || tasks[0].preset != nil || (len(tasks[0].routes) == 1 && tasks[0].routes[0].renderErr != nil) {
		// A recipient with a lookup of its own asks there; others ask first.
		if _, done, err := b.cfg.Store.EventDone(ctx, ev.key); err != nil {
			return "", err
		} else if done {
			return duplicate()
		}
	}
	if len(tasks) == 1 {
		// The common case runs in this goroutine: one lookup also says
		// whether the event was handled before, and its outcome and the
		// event's completion share a write.
		tasks[0].last = true
		final, err := b.deliver(ctx, log, ev, tasks[0])
		switch {
		case errors.Is(err, errEventDone):
			return duplicate()
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
	at := startAt(len(tasks), ev.key)
	for i := range tasks {
		t := tasks[(at+i)%len(tasks)]
		wg.Add(1)
		// A free task worker, waiting for tasks of this or other events,
		// which never wait for this loop.
		b.taskWorkers.do(func() {
			defer wg.Done()
			final, err := b.deliver(ctx, log, ev, t)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if !final {
				pending++
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	if pending > 0 {
		return "", &retryLater{pending}
	}
	if err := b.cfg.Store.MarkEventDone(ctx, ev.key, ev.Type); err != nil {
		return "", err
	}
	failpoint.Hit("before-ack")
	return "done", nil
}

// Reasons of outcomes decided while planning.
const (
	// reasonNoRecipient: a recipient spec named nobody for the event (it
	// rendered empty, or its role has no members).
	reasonNoRecipient = "no_recipient"
	// reasonTooManyRecipients: the event named more recipients than
	// MaxRecipients; those beyond the cap were not sent.
	reasonTooManyRecipients = "too_many_recipients"
)

// plan resolves every matched rule's recipients into tasks, at most
// MaxRecipients for the whole event. Every spec gets an outcome: a user
// reached twice by one rule (named, and through a role) gets one task; a
// spec or role that names nobody gets a skipped/no_recipient result; the
// recipients over the cap get one failed/too_many_recipients result per
// rule.
func (b *Bridge) plan(ctx context.Context, ev *event, matched []rules.Matched) ([]task, error) {
	var tasks []task
	budget := b.cfg.MaxRecipients
	presetTask := func(r *rules.Rule, rk string, o outcome) {
		tasks = append(tasks, task{rule: r, preset: &o, rk: rk, key: storage.SendKey(ev.key, r.Name, rk)})
	}
	for _, m := range matched {
		r := m.Rule
		if m.Err != nil {
			presetTask(r, "when", outcome{storage.StateFailed, reasonInvalidData, m.Err.Error()})
			continue
		}
		routes := routesFor(r, ev.Event)
		specs, specErr := r.Recipients(ev.Event)
		if specErr != nil {
			presetTask(r, "spec", outcome{storage.StateFailed, reasonInvalidData, specErr.Error()})
			continue
		}
		seen := map[string]bool{}
		over := 0
		add := func(userID, openID string) {
			rk := "u:" + userID
			if userID == "" {
				rk = "o:" + openID
			}
			if seen[rk] {
				return
			}
			seen[rk] = true
			if budget <= 0 {
				over++
				return
			}
			budget--
			tasks = append(tasks, task{rule: r, routes: routes,
				userID: userID, openID: openID, rk: rk, key: storage.SendKey(ev.key, r.Name, rk)})
		}
		for _, rc := range specs {
			switch {
			case rc.UserID != "":
				if err := checkRecipient("user id", rc.UserID, MaxUserIDBytes); err != nil {
					presetTask(r, badKey(rc.UserID), outcome{storage.StateFailed, reasonInvalidData, rc.Field + ": " + err.Error()})
					continue
				}
				add(rc.UserID, "")
			case rc.OpenID != "":
				if err := checkRecipient("openid", rc.OpenID, MaxOpenIDBytes); err != nil {
					presetTask(r, badKey(rc.OpenID), outcome{storage.StateFailed, reasonInvalidData, rc.Field + ": " + err.Error()})
					continue
				}
				add("", rc.OpenID)
			case rc.Role != "":
				if err := errors.Join(checkRecipient("role", rc.Role, MaxRoleBytes), checkRecipient("scope", rc.Scope, MaxRoleBytes)); err != nil {
					presetTask(r, badKey(rc.Role+"\x00"+rc.Scope), outcome{storage.StateFailed, reasonInvalidData, rc.Field + ": " + err.Error()})
					continue
				}
				members, err := b.cfg.Store.RoleMembers(ctx, rc.Role, rc.Scope)
				if err != nil {
					return nil, fmt.Errorf("members of role %s in %s: %w", rc.Role, rc.Scope, err)
				}
				if len(members) == 0 {
					presetTask(r, "role:"+rc.Role+"\x00"+rc.Scope, outcome{storage.StateSkipped, reasonNoRecipient,
						fmt.Sprintf("%s: nobody holds role %s in %q", rc.Field, rc.Role, rc.Scope)})
					continue
				}
				for _, m := range members {
					add(m.UserID, "")
				}
			default:
				presetTask(r, "none:"+rc.Field, outcome{storage.StateSkipped, reasonNoRecipient, rc.Field + " named nobody for this event"})
			}
		}
		if over > 0 {
			presetTask(r, "over-cap", outcome{storage.StateFailed, reasonTooManyRecipients,
				fmt.Sprintf("%d recipients over the cap of %d recipients an event; they were not sent", over, b.cfg.MaxRecipients)})
		}
	}
	return tasks, nil
}

// checkRecipient refuses a rendered recipient id that is too long or holds
// control characters: it cannot be a real id, and must not become a key.
func checkRecipient(what, v string, limit int) error {
	if err := checkID(what, v, limit); err != nil {
		var be *badEvent
		if errors.As(err, &be) {
			return errors.New(be.reason)
		}
		return err
	}
	return nil
}

// badKey names an invalid recipient in its send key without the value
// itself, which may be huge.
func badKey(v string) string {
	h := sha256.Sum256([]byte(v))
	return "bad:" + hex.EncodeToString(h[:8])
}

// reportDuplicates answers an event that was already fully handled: each
// of its recipients gets a skipped/duplicate result, and nothing is sent.
func (b *Bridge) reportDuplicates(ctx context.Context, ev *event, delivery string) error {
	recs, err := b.cfg.Store.EventSends(ctx, ev.key)
	if err != nil {
		return err
	}
	msgs := make([]storage.OutboxMessage, 0, len(recs))
	for _, rec := range recs {
		rec.State, rec.Reason, rec.Delivery = storage.StateSkipped, reasonDuplicate, ""
		msgs = append(msgs, b.resultMessage(rec, "dup."+delivery))
		b.metrics.result(rec.State, rec.Reason, 0)
	}
	b.log.Info("duplicate event: nothing sent", "event_id", ev.ID, "event_source", ev.Source, "event_type", ev.Type, "recipients", len(recs))
	return b.cfg.Store.Enqueue(ctx, msgs...)
}

func attemptsLeft(rec storage.SendRecord, max int) bool { return rec.Attempts < max }

// startAt is where an event starts going through its n tasks: a place of
// its own for each event. Events that go to the same people (a role,
// several events in a row) then do not walk the list in step. In step, the
// task workers all held tasks for the same few people, each waiting its
// turn for that person (one send at a time to one openid): 260 events to a
// role of 2,000 went at 4,400 sends/s, and at 7,500 once each started at a
// place of its own (wxbridge bench --scenario fanout-1000 --fanout 2000
// --fanout-events 260).
func startAt(n int, eventKey string) int {
	h := fnv.New64a()
	_, _ = h.Write([]byte(eventKey))
	return int(h.Sum64() % uint64(n))
}
