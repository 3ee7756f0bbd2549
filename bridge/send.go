package bridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxbridge/wxbridge/internal/failpoint"
	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/wechat"
)

// Result reasons (see the result payload in design.md).
const (
	reasonNotBound         = "not_bound"
	reasonNotSubscribed    = "not_subscribed"
	reasonRejected         = "rejected"
	reasonDuplicate        = "duplicate"
	reasonInvalidData      = "invalid_data"
	reasonWeChatError      = "wechat_error"
	reasonRetriesExhausted = "retries_exhausted"
	reasonQuietHours       = "quiet_hours"
	// reasonInDoubt: a crash left the send in doubt and the rule's delivery
	// is at_most_once, so it was not sent again.
	reasonInDoubt = "in_doubt"
)

// deliver takes one (rule, recipient) of an event as far as it can go. It
// reports whether the recipient now has a final outcome; an error means the
// state could not be read or written and the event must be retried.
func (b *Bridge) deliver(ctx context.Context, log evlog, ev *event, t task) (final bool, err error) {
	ctx, sp := b.tracer.Start(ctx, "wxbridge.recipient", trace.WithAttributes(
		attribute.String("wxbridge.rule", t.rule.Name), attribute.String("wxbridge.recipient", t.rk)))
	defer func() {
		if err != nil {
			sp.RecordError(err)
			sp.SetStatus(codes.Error, clipN(err.Error(), 200))
		}
		sp.End()
	}()
	rc := &recorder{b: b, last: t.last}
	final, err = b.deliverTo(ctx, log, ev, t, rc)
	if err == nil && final && t.last && !rc.marked {
		// The outcome was recorded before (a redelivery) or is deferred: the
		// event is done all the same.
		err = b.cfg.Store.MarkEventDone(ctx, ev.key, ev.Type)
	}
	return final, err
}

func (b *Bridge) deliverTo(ctx context.Context, log evlog, ev *event, t task, rc *recorder) (final bool, err error) {
	rec := storage.SendRecord{Key: t.key, EventID: ev.key, EventType: ev.Type, Rule: t.rule.Name,
		App: t.rule.App.Name, TemplateID: t.rule.Template.ID, UserID: t.userID, OpenID: t.openID, Trace: traceparentOf(ctx)}
	log = log.forTask(t)

	switch {
	case t.preset != nil:
		if t.preset.state == storage.StateFailed {
			log.Warn("recipient cannot be rendered", "reason", t.preset.reason, "err", t.preset.detail)
		}
		return rc.finish(ctx, rec, t.preset.state, t.preset.reason, t.preset.detail, storage.KeepCredit)
	case t.renderErr != nil:
		log.Warn("data cannot be rendered", "err", t.renderErr)
		return rc.finish(ctx, rec, storage.StateFailed, reasonInvalidData, t.renderErr.Error(), storage.KeepCredit)
	}
	pol := t.rule.Policy
	req := storage.ReserveRequest{
		Owner:         b.cfg.Store.Owner(),
		CheckCredit:   t.rule.App.Subscriptions != rules.SubscriptionsWeChat,
		Kind:          t.rule.Template.Kind,
		ResendInDoubt: pol.Delivery != rules.AtMostOnce,
	}
	if pol.Dedupe != nil {
		k, err := t.rule.DedupeKey(ev.Event)
		if err != nil {
			return rc.finish(ctx, rec, storage.StateFailed, reasonInvalidData, err.Error(), storage.KeepCredit)
		}
		req.DedupeKey, req.DedupeWindow = storage.Key(t.rule.Name, k, t.rk), pol.Dedupe.Window
	}
	if c := pol.Cap; c != nil {
		req.CapKey, req.CapMax, req.CapPer = storage.Key(t.rule.Name, t.rk), c.Max, c.Per
	}
	lookup := storage.Lookup{SendKey: t.key, App: rec.App, UserID: rec.UserID, OpenID: rec.OpenID, TemplateID: rec.TemplateID,
		DedupeKey: req.DedupeKey, CapKey: req.CapKey}
	if t.last && !t.scheduled {
		// The event's only recipient: one read says whether it is done too.
		lookup.EventKey = ev.key
	}
	lctx, endLookup := b.span(ctx, "wxbridge.store.lookup")
	found, err := b.cfg.Store.Lookup(lctx, lookup)
	endLookup(err)
	switch {
	case err != nil:
		return false, err
	case found.EventDone:
		return false, errEventDone
	case found.HasRecord && storage.Final(found.Record.State):
		return true, nil // a redelivery: the outcome stands
	}
	if rec.OpenID == "" {
		if !found.Bound {
			return rc.finish(ctx, rec, storage.StateSkipped, reasonNotBound, "", storage.KeepCredit)
		}
		rec.OpenID = found.Binding.OpenID
	}
	if q := pol.QuietHours; q != nil && !t.scheduled {
		if quiet, end := q.Check(b.cfg.Now()); quiet {
			if q.Action == rules.QuietDrop {
				return rc.finish(ctx, rec, storage.StateSkipped, reasonQuietHours, "", storage.KeepCredit)
			}
			return b.deferUntil(ctx, log, ev, t, rec, end)
		}
	}
	req.Record, req.Snapshot = rec, found.Snapshot

	// Everything a send may wait for comes before its reservation: the
	// openid's turn (WeChat answers 43108 to overlapping sends to one
	// user), the app's rate, a slot among the concurrent calls, an access
	// token. A crash while waiting then leaves no pending record behind, and
	// the send is simply tried afresh; only a record reserved right before
	// its request went out can be in doubt.
	unlock := b.openids.lock(rec.OpenID)
	defer unlock()
	if err := b.limits.wait(ctx, rec.App); err != nil {
		return false, err
	}
	select {
	case b.sends <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-b.sends }()
	if err := b.cfg.WeChat.Ready(ctx, rec.App); err != nil {
		return b.noToken(ctx, log, rc, rec, err)
	}
	if err := b.cfg.Store.Lease(); err != nil {
		// Others may take this bridge's pending records for in doubt: it
		// starts no WeChat call until its lease is renewed.
		return false, fmt.Errorf("no WeChat call without a lease: %w", err)
	}

	rctx, endReserve := b.span(ctx, "wxbridge.store.reserve")
	res, err := b.cfg.Store.Reserve(rctx, req)
	endReserve(err)
	if err != nil {
		return false, err
	}
	switch res.Outcome {
	case storage.AlreadyFinal:
		return true, nil
	case storage.Busy:
		// Another bridge, alive, is sending it: its outcome will come.
		log.Debug("send under way at another bridge; will look again")
		return false, nil
	case storage.NoCredit, storage.Suppressed:
		return rc.finish(ctx, res.Record, storage.StateSkipped, res.Reason, "", storage.KeepCredit)
	case storage.InDoubt:
		log.Warn("send left in doubt by an attempt that never finished; at_most_once: not sending again")
		res.Record.InDoubt = true
		return rc.finish(ctx, res.Record, storage.StateFailed, reasonInDoubt, "", storage.KeepCredit)
	}
	rec = res.Record
	if rec.InDoubt {
		log.Warn("send left in doubt by an attempt that never finished; at_least_once: sending again")
	}
	failpoint.Hit("after-reserve")
	msgid, sendErr := b.call(ctx, t.rendered, rec.OpenID)
	failpoint.Hit("after-send")
	final, err = b.settle(ctx, log, rc, rec, msgid, sendErr)
	failpoint.Hit("after-complete")
	return final, err
}

// noToken handles a send that cannot start for want of an access token.
// While the client waits to fetch again (no request was made), the event
// comes back when it will try: nothing was attempted, nothing is counted.
// A fetch that was made and failed counts as an attempt of the recipient,
// so a token that never comes (a wrong secret) ends in retries_exhausted.
func (b *Bridge) noToken(ctx context.Context, log evlog, rc *recorder, rec storage.SendRecord, err error) (bool, error) {
	if errors.Is(err, wechat.ErrTokenBackoff) {
		return false, &tokenWait{at: wechat.RetryAt(err), err: err}
	}
	if !errors.Is(err, wechat.ErrTokenFetch) {
		return false, err // the caller's context ended, or the client closed
	}
	cur, found, rerr := b.cfg.Store.Send(ctx, rec.Key)
	if rerr != nil {
		return false, rerr
	}
	if found {
		if storage.Final(cur.State) {
			return true, nil
		}
		rec.Attempts = cur.Attempts
	}
	rec.Attempts++
	rec.ErrMsg = clipN(err.Error(), maxErrMsg)
	if !attemptsLeft(rec, b.cfg.MaxAttempts) {
		log.Warn("giving up on recipient: no access token", "attempts", rec.Attempts, "err", err)
		return rc.finish(ctx, rec, storage.StateFailed, reasonRetriesExhausted, rec.ErrMsg, storage.KeepCredit)
	}
	b.metrics.retries.Inc()
	return rc.finish(ctx, rec, storage.StateRetry, "", rec.ErrMsg, storage.KeepCredit)
}

// call makes the WeChat call. The caller holds the openid's turn and a
// send slot.
func (b *Bridge) call(ctx context.Context, r *rules.Rendered, openid string) (string, error) {
	b.metrics.sending.Inc()
	defer b.metrics.sending.Dec()
	ctx, sp := b.tracer.Start(ctx, "wechat.subscribe.send", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("wechat.app", r.App), attribute.String("wechat.template_id", r.TemplateID)))
	defer sp.End()
	start := time.Now()
	msgid, err := b.cfg.WeChat.Send(ctx, r.App, wechat.Message{ToUser: openid, TemplateID: r.TemplateID, Page: r.Page,
		Data: r.Data, State: r.State, Lang: r.Lang})
	outcome := "ok"
	if err != nil {
		outcome = "error"
		var api *wechat.APIError
		if errors.As(err, &api) {
			sp.SetAttributes(attribute.String("wechat.errcode", strconv.Itoa(api.Code)))
		}
		sp.SetStatus(codes.Error, clipN(err.Error(), 200))
	}
	b.metrics.wechat.WithLabelValues(r.App, outcome).Observe(time.Since(start).Seconds())
	return msgid, err
}

// settle records what WeChat answered.
func (b *Bridge) settle(ctx context.Context, log evlog, rc *recorder, rec storage.SendRecord, msgid string, err error) (bool, error) {
	var api *wechat.APIError
	errors.As(err, &api)
	if api != nil {
		// WeChat's errmsg is short; a proxy's need not be.
		rec.ErrCode, rec.ErrMsg = api.Code, clipN(api.Msg, maxErrMsg)
	}
	switch {
	case err == nil:
		rec.MsgID, rec.ErrCode, rec.ErrMsg = msgid, 0, "ok"
		return rc.finish(ctx, rec, storage.StateSent, "", "ok", storage.KeepCredit)
	case errors.Is(err, wechat.ErrNotSubscribed):
		return rc.finish(ctx, rec, storage.StateFailed, reasonNotSubscribed, rec.ErrMsg, storage.ZeroCredits)
	case errors.Is(err, wechat.ErrRecipient):
		return rc.finish(ctx, rec, storage.StateFailed, reasonWeChatError, rec.ErrMsg, storage.RefundCredit)
	case errors.Is(err, wechat.ErrConfig), errors.Is(err, wechat.ErrData):
		log.Error("WeChat refused the message: fix the rules or the template", "errcode", rec.ErrCode, "err", err)
		b.metrics.configErrs.WithLabelValues(rec.App, strconv.Itoa(rec.ErrCode)).Inc()
		return rc.finish(ctx, rec, storage.StateFailed, reasonWeChatError, rec.ErrMsg, storage.RefundCredit)
	case errors.Is(err, wechat.ErrTransient), errors.Is(err, wechat.ErrTokenInvalid), errors.Is(err, wechat.ErrTokenFetch):
		if rec.ErrMsg == "" {
			rec.ErrMsg = clipN(err.Error(), maxErrMsg)
		}
		// A call that may have reached WeChat (a timeout after the request
		// went out) keeps its credit and is in doubt: it may have been sent.
		effect := storage.RefundCredit
		if errors.Is(err, wechat.ErrUncertain) {
			effect = storage.KeepCredit
			rec.InDoubt = true
		}
		if !attemptsLeft(rec, b.cfg.MaxAttempts) {
			log.Warn("giving up on recipient", "attempts", rec.Attempts, "err", err)
			return rc.finish(ctx, rec, storage.StateFailed, reasonRetriesExhausted, rec.ErrMsg, effect)
		}
		log.Info("transient failure; will retry", "attempt", rec.Attempts, "err", err)
		b.metrics.retries.Inc()
		return rc.finish(ctx, rec, storage.StateRetry, "", rec.ErrMsg, effect)
	default:
		if rec.ErrMsg == "" {
			rec.ErrMsg = clipN(err.Error(), maxErrMsg)
		}
		log.Error("send failed", "err", err)
		return rc.finish(ctx, rec, storage.StateFailed, reasonWeChatError, rec.ErrMsg, storage.RefundCredit)
	}
}

// maxErrMsg bounds the error message a result carries.
const maxErrMsg = 512

// recorder records the outcome of one task. For the last (only) task of an
// event it also marks the event done in the same transaction.
type recorder struct {
	b      *Bridge
	last   bool
	marked bool // the event was marked done with the outcome
}

func (rc *recorder) finish(ctx context.Context, rec storage.SendRecord, state, reason, errmsg string, effect storage.CreditEffect) (bool, error) {
	final, err := rc.b.record(ctx, rec, state, reason, errmsg, effect, rc.last)
	rc.marked = rc.last && final && err == nil
	return final, err
}

// finish records an outcome of a task that does not end its event.
func (b *Bridge) finish(ctx context.Context, rec storage.SendRecord, state, reason, errmsg string, effect storage.CreditEffect) (bool, error) {
	return b.record(ctx, rec, state, reason, errmsg, effect, false)
}

// record stores a state for rec and, when it is final, queues its result in
// the same transaction (and with eventDone marks its event done). It
// reports whether the state is final.
func (b *Bridge) record(ctx context.Context, rec storage.SendRecord, state, reason, errmsg string, effect storage.CreditEffect, eventDone bool) (bool, error) {
	rec.State, rec.Reason = state, reason
	if errmsg != "" {
		rec.ErrMsg = errmsg
	}
	var build func(storage.SendRecord) []storage.OutboxMessage
	if storage.Final(state) {
		build = func(r storage.SendRecord) []storage.OutboxMessage {
			return []storage.OutboxMessage{b.resultMessage(r, "")}
		}
	}
	complete := b.cfg.Store.Complete
	if eventDone {
		complete = b.cfg.Store.CompleteEvent
	}
	trace.SpanFromContext(ctx).SetAttributes(outcomeAttrs(state, reason, rec.ErrCode)...)
	cctx, endComplete := b.span(ctx, "wxbridge.store.complete")
	saved, applied, err := complete(cctx, rec, effect, build)
	endComplete(err)
	if err != nil {
		return false, err
	}
	if applied && storage.Final(saved.State) {
		b.metrics.result(saved.State, saved.Reason, saved.ErrCode)
	}
	return storage.Final(saved.State), nil
}
