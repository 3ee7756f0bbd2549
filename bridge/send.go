package bridge

import (
	"context"
	"errors"
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
	routes := t.routes
	if t.openID != "" {
		// An openid is one app's: the rule's first.
		routes = routes[:1]
	}
	rec := storage.SendRecord{Key: t.key, EventID: ev.key, EventType: ev.Type, Rule: t.rule.Name,
		App: t.rule.App.Name, TemplateID: t.rule.Template.ID, UserID: t.userID, OpenID: t.openID, Trace: traceparentOf(ctx)}
	log = log.forTask(t)

	switch {
	case t.preset != nil:
		if t.preset.state == storage.StateFailed {
			log.Warn("recipient cannot be rendered", "reason", t.preset.reason, "err", t.preset.detail)
		}
		return rc.finish(ctx, rec, t.preset.state, t.preset.reason, t.preset.detail, storage.KeepCredit)
	case len(routes) == 1 && routes[0].renderErr != nil:
		log.Warn("data cannot be rendered", "err", routes[0].renderErr)
		return rc.finish(ctx, rec, storage.StateFailed, reasonInvalidData, routes[0].renderErr.Error(), storage.KeepCredit)
	}
	pol := t.rule.Policy
	req := storage.ReserveRequest{
		Owner:         b.cfg.Store.Owner(),
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
	if found.HasRecord && pinned(found.Record) {
		// The send may have gone out by its channel, or holds its credit
		// there: it stays there, and goes by no other.
		rt, ok := routeOf(routes, found.Record)
		if !ok {
			final, _, _, err := b.lostChannel(ctx, log, rc, found.Record)
			return final, err
		}
		routes = []route{rt}
		rec.OpenID = found.Record.OpenID
	}
	quietChecked := t.scheduled
	var tried, reasons []string
	for i, rt := range routes {
		r := rec
		r.App, r.TemplateID = rt.app.Name, rt.tpl.ID
		if r.OpenID == "" {
			// The lookup read the binding in the first route's app.
			openid, reason, err := b.reach(ctx, t, rt, i == 0 && rt.app.Name == lookup.App, found)
			if err != nil {
				return false, err
			}
			if reason != "" {
				tried, reasons = append(tried, rt.name()), append(reasons, reason)
				continue
			}
			r.OpenID = openid
		}
		if rt.renderErr != nil {
			log.Warn("data cannot be rendered", "template", rt.name(), "err", rt.renderErr)
			return rc.finish(ctx, r, storage.StateFailed, reasonInvalidData, rt.renderErr.Error(), storage.KeepCredit)
		}
		if q := pol.QuietHours; q != nil && !quietChecked {
			quietChecked = true
			if quiet, end := q.Check(b.cfg.Now()); quiet {
				if q.Action == rules.QuietDrop {
					return rc.finish(ctx, r, storage.StateSkipped, reasonQuietHours, "", storage.KeepCredit)
				}
				return b.deferUntil(ctx, log, ev, t, r, end)
			}
		}
		if i == 0 {
			// What the lookup read for the reservation is this route's.
			req.Snapshot = found.Snapshot
		} else {
			req.Snapshot = nil
		}
		final, next, reason, err := b.sendBy(ctx, log, rc, t, rt, r, req, i < len(routes)-1)
		if err != nil || !next {
			return final, err
		}
		log.Debug("channel cannot reach the recipient; trying the next", "template", rt.name(), "reason", reason)
		tried, reasons = append(tried, rt.name()), append(reasons, reason)
	}
	return b.unreached(ctx, rc, rec, tried, reasons)
}

// noToken handles a send that cannot start for want of an access token.
// While the client waits to fetch again (no request was made), the event
// comes back when it will try: nothing was attempted, nothing is counted.
// A fetch that was made and failed counts as an attempt of the recipient,
// so a token that never comes (a wrong secret) ends in retries_exhausted.
func (b *Bridge) noToken(ctx context.Context, log evlog, rc *recorder, rec storage.SendRecord, err error) (bool, error) {
	if errors.Is(err, wechat.ErrTokenBackoff) {
		return false, &retryAt{at: wechat.RetryAt(err), err: err}
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

// sendReserved makes the WeChat call of a reserved record and records
// what WeChat answered. The caller holds the openid's turn and a send
// slot. more says other routes remain to be tried: then an answer that the
// recipient cannot be reached this way (43101, 43004) asks for the next.
func (b *Bridge) sendReserved(ctx context.Context, log evlog, rc *recorder, rt route, rec storage.SendRecord, more bool) (final, next bool, reason string, err error) {
	failpoint.Hit("after-reserve")
	msgid, sendErr := b.call(ctx, rt, rec)
	failpoint.Hit("after-send")
	final, next, reason, err = b.settle(ctx, log, rc, rec, msgid, sendErr, more)
	failpoint.Hit("after-complete")
	return final, next, reason, err
}

// call makes the WeChat call.
func (b *Bridge) call(ctx context.Context, rt route, rec storage.SendRecord) (string, error) {
	b.metrics.sending.Inc()
	defer b.metrics.sending.Dec()
	r := rt.rendered
	ctx, sp := b.tracer.Start(ctx, spanName(r.Channel), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("wechat.app", r.App), attribute.String("wechat.template_id", r.TemplateID)))
	defer sp.End()
	start := time.Now()
	msgid, err := b.send(ctx, rt, rec)
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
func (b *Bridge) settle(ctx context.Context, log evlog, rc *recorder, rec storage.SendRecord, msgid string, err error, more bool) (final, next bool, reason string, _ error) {
	var api *wechat.APIError
	errors.As(err, &api)
	if api != nil {
		// WeChat's errmsg is short; a proxy's need not be.
		rec.ErrCode, rec.ErrMsg = api.Code, clipN(api.Msg, maxErrMsg)
	}
	done := func(state, reason string, effect storage.CreditEffect) (bool, bool, string, error) {
		final, err := rc.finish(ctx, rec, state, reason, rec.ErrMsg, effect)
		return final, false, "", err
	}
	// unreachable: WeChat says this channel cannot reach the recipient, and
	// certainly sent nothing. With routes left, the next is tried.
	unreachable := func(reason string, effect storage.CreditEffect) (bool, bool, string, error) {
		if !more {
			return done(storage.StateFailed, reason, effect)
		}
		if _, err := rc.finish(ctx, rec, storage.StateRetry, "", rec.ErrMsg, effect); err != nil {
			return false, false, "", err
		}
		return false, true, reason, nil
	}
	switch {
	case err == nil:
		rec.MsgID, rec.ErrCode, rec.ErrMsg = msgid, 0, "ok"
		return done(storage.StateSent, "", storage.KeepCredit)
	case errors.Is(err, wechat.ErrAlreadySent):
		// A template message under this send's client_msg_id went out
		// before (an attempt whose answer was lost): that one stands.
		rec.MsgID, rec.ErrCode, rec.ErrMsg = api.MsgID, 0, "ok"
		log.Info("WeChat already had this message; not sent twice", "msgid", api.MsgID)
		return done(storage.StateSent, "", storage.KeepCredit)
	case errors.Is(err, wechat.ErrNotSubscribed):
		return unreachable(reasonNotSubscribed, storage.ZeroCredits)
	case errors.Is(err, wechat.ErrNotFollowing):
		if err := b.cfg.Store.SaveFollowers(ctx, storage.FollowChange{App: rec.App, OpenID: rec.OpenID,
			Source: storage.SourceFollowPush, At: b.cfg.Now()}); err != nil {
			return false, false, "", err
		}
		return unreachable(reasonNotFollowing, storage.RefundCredit)
	case errors.Is(err, wechat.ErrRecipient):
		return done(storage.StateFailed, reasonWeChatError, storage.RefundCredit)
	case errors.Is(err, wechat.ErrConfig), errors.Is(err, wechat.ErrData):
		log.Error("WeChat refused the message: fix the rules or the template", "errcode", rec.ErrCode, "err", err)
		b.metrics.configErrs.WithLabelValues(rec.App, strconv.Itoa(rec.ErrCode)).Inc()
		return done(storage.StateFailed, reasonWeChatError, storage.RefundCredit)
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
			return done(storage.StateFailed, reasonRetriesExhausted, effect)
		}
		log.Info("transient failure; will retry", "attempt", rec.Attempts, "err", err)
		b.metrics.retries.Inc()
		return done(storage.StateRetry, "", effect)
	default:
		if rec.ErrMsg == "" {
			rec.ErrMsg = clipN(err.Error(), maxErrMsg)
		}
		log.Error("send failed", "err", err)
		return done(storage.StateFailed, reasonWeChatError, storage.RefundCredit)
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
