package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/wechat"
)

// Reasons a channel cannot reach a recipient, besides the ledger's
// (not_subscribed, rejected...) and not_bound.
const (
	// reasonNotFollowing: the person does not follow the official account
	// (or wxbridge knows of no follower with their unionid).
	reasonNotFollowing = "not_following"
	// reasonNoUnionID: none of the person's bindings carries a unionid, so
	// their openid in the official account cannot be known.
	reasonNoUnionID = "no_unionid"
)

// route is one of a rule's channels for one event: the template, its app,
// and the message rendered for it.
type route struct {
	tpl      *rules.Template
	app      *rules.App
	rendered *rules.Rendered
	// renderErr: the event's data cannot be rendered for this template.
	// Only a recipient this channel would reach fails for it.
	renderErr error
}

// routesFor renders an event for each of the rule's channels, in the order
// they are tried.
func routesFor(r *rules.Rule, ev *rules.Event) []route {
	tpls := r.Channels()
	out := make([]route, len(tpls))
	for i, tpl := range tpls {
		out[i] = route{tpl: tpl, app: tpl.Application()}
		out[i].rendered, out[i].renderErr = r.RenderFor(ev, tpl)
	}
	return out
}

func (rt route) channel() string { return rt.tpl.Channel() }

// name is how results and logs name the channel: its template's name.
func (rt route) name() string { return rt.tpl.Name }

// on reports whether rec goes by this route.
func (rt route) on(rec storage.SendRecord) bool {
	return rec.App == rt.app.Name && rec.TemplateID == rt.tpl.ID
}

// spendsCredit: whether a send by this route spends a credit of the
// ledger. A template message needs only that the user follows the account.
func (rt route) spendsCredit() bool {
	return rt.channel() != rules.ChannelTemplateMessage && rt.app.Subscriptions != rules.SubscriptionsWeChat
}

// pinned reports a record whose channel is settled: a send that may have
// gone out (pending, in doubt) or that holds a credit of its channel. Only
// a retry that holds nothing may go by another channel.
func pinned(rec storage.SendRecord) bool {
	return rec.State == storage.StatePending || rec.InDoubt || rec.CreditTaken
}

// reach finds the recipient's openid in the route's app, or the reason it
// has none. first says the lookup read the user's binding in this app.
func (b *Bridge) reach(ctx context.Context, t task, rt route, first bool, found storage.Found) (openid, reason string, err error) {
	if t.openID != "" {
		return t.openID, "", nil
	}
	if rt.app.Kind != rules.AppOfficialAccount {
		if first {
			if !found.Bound {
				return "", reasonNotBound, nil
			}
			return found.Binding.OpenID, "", nil
		}
		bd, ok, err := b.cfg.Store.Binding(ctx, rt.app.Name, t.userID)
		if err != nil || !ok {
			return "", reasonNotBound, err
		}
		return bd.OpenID, "", nil
	}
	// An official account: a binding in it (a backend that learnt the
	// person's openid there, through the account's web authorization)...
	own, bound := found.Binding, found.Bound
	if !first {
		if own, bound, err = b.cfg.Store.Binding(ctx, rt.app.Name, t.userID); err != nil {
			return "", "", err
		}
	}
	if bound {
		if rt.channel() == rules.ChannelTemplateMessage {
			f, known, err := b.cfg.Store.Follower(ctx, rt.app.Name, own.OpenID)
			if err != nil {
				return "", "", err
			}
			if known && !f.Following {
				return "", reasonNotFollowing, nil
			}
		}
		return own.OpenID, "", nil
	}
	// ...else the person is found by the unionid one of their bindings
	// (in a mini program) learnt from code2session.
	unionid := ""
	if found.Bound {
		unionid = found.Binding.UnionID
	}
	if unionid == "" {
		all, err := b.cfg.Store.Bindings(ctx, t.userID)
		if err != nil {
			return "", "", err
		}
		if len(all) == 0 {
			return "", reasonNotBound, nil
		}
		for _, bd := range all {
			if bd.UnionID != "" {
				unionid = bd.UnionID
				break
			}
		}
		if unionid == "" {
			return "", reasonNoUnionID, nil
		}
	}
	f, ok, err := b.cfg.Store.FollowerByUnionID(ctx, rt.app.Name, unionid)
	if err != nil {
		return "", "", err
	}
	if !ok {
		// Perhaps a follower from before wxbridge listened: list them.
		if ok, err = b.followers.refresh(ctx, rt.app.Name); err != nil {
			return "", "", err
		}
		if ok {
			if f, ok, err = b.cfg.Store.FollowerByUnionID(ctx, rt.app.Name, unionid); err != nil {
				return "", "", err
			}
		}
	}
	switch {
	case !ok:
		return "", reasonNotFollowing, nil
	case !f.Following && rt.channel() == rules.ChannelTemplateMessage:
		// A subscription notification needs a credit, not a follow: the
		// ledger decides.
		return "", reasonNotFollowing, nil
	}
	return f.OpenID, "", nil
}

// sendBy sends through rt, which reaches rec.OpenID; rec carries the
// route's app and template. next says the route turned out not to reach
// the recipient after all (no credit, or WeChat said so), for the reason
// given, and nothing was sent: the next route may be tried.
func (b *Bridge) sendBy(ctx context.Context, log evlog, rc *recorder, t task, rt route, rec storage.SendRecord, req storage.ReserveRequest, more bool) (final, next bool, reason string, err error) {
	req.Record = rec
	req.CheckCredit, req.Kind = rt.spendsCredit(), rt.tpl.Kind

	// Everything a send may wait for comes before its reservation: the
	// openid's turn (WeChat answers 43108 to overlapping sends to one
	// user), the app's rate, a slot among the concurrent calls, an access
	// token. A crash while waiting then leaves no pending record behind, and
	// the send is simply tried afresh; only a record reserved right before
	// its request went out can be in doubt.
	unlock := b.openids.lock(rec.OpenID)
	defer unlock()
	if err := b.limits.wait(ctx, rec.App); err != nil {
		return false, false, "", err
	}
	select {
	case b.sends <- struct{}{}:
	case <-ctx.Done():
		return false, false, "", ctx.Err()
	}
	defer func() { <-b.sends }()
	if err := b.cfg.WeChat.Ready(ctx, rec.App); err != nil {
		final, err := b.noToken(ctx, log, rc, rec, err)
		return final, false, "", err
	}
	if err := b.cfg.Store.Lease(); err != nil {
		// Others may take this bridge's pending records for in doubt: it
		// starts no WeChat call until its lease is renewed.
		return false, false, "", fmt.Errorf("no WeChat call without a lease: %w", err)
	}

	rctx, endReserve := b.span(ctx, "wxbridge.store.reserve")
	res, err := b.cfg.Store.Reserve(rctx, req)
	endReserve(err)
	if err != nil {
		return false, false, "", err
	}
	finish := func(rec storage.SendRecord, state, reason string) (bool, bool, string, error) {
		final, err := rc.finish(ctx, rec, state, reason, "", storage.KeepCredit)
		return final, false, "", err
	}
	switch res.Outcome {
	case storage.AlreadyFinal:
		return true, false, "", nil
	case storage.Busy:
		// Another bridge, alive, is sending it: its outcome will come.
		log.Debug("send under way at another bridge; will look again")
		return false, false, "", nil
	case storage.NoCredit:
		return false, true, res.Reason, nil
	case storage.Suppressed:
		return finish(res.Record, storage.StateSkipped, res.Reason)
	case storage.InDoubt:
		log.Warn("send left in doubt by an attempt that never finished; at_most_once: not sending again")
		res.Record.InDoubt = true
		return finish(res.Record, storage.StateFailed, reasonInDoubt)
	}
	rec = res.Record
	if !rt.on(rec) {
		// Between the lookup and the reservation another attempt settled
		// the record on another channel, and it stays there: send it there.
		other, ok := routeOf(t.routes, rec)
		if !ok {
			return b.lostChannel(ctx, log, rc, rec)
		}
		rt, more = other, false
	}
	if rt.renderErr != nil {
		log.Warn("data cannot be rendered", "template", rt.name(), "err", rt.renderErr)
		final, err := rc.finish(ctx, rec, storage.StateFailed, reasonInvalidData, rt.renderErr.Error(), storage.RefundCredit)
		return final, false, "", err
	}
	if rec.InDoubt {
		log.Warn("send left in doubt by an attempt that never finished; at_least_once: sending again")
	}
	return b.sendReserved(ctx, log, rc, rt, rec, more)
}

// routeOf finds the route a record goes by.
func routeOf(routes []route, rec storage.SendRecord) (route, bool) {
	for _, rt := range routes {
		if rt.on(rec) {
			return rt, true
		}
	}
	return route{}, false
}

// lostChannel settles a record whose send may have gone out by a template
// the rule no longer has: nothing can render it again.
func (b *Bridge) lostChannel(ctx context.Context, log evlog, rc *recorder, rec storage.SendRecord) (bool, bool, string, error) {
	log.Warn("send left in doubt by a template the rule no longer sends by; not sending again", "app", rec.App, "template_id", rec.TemplateID)
	rec.InDoubt = true
	final, err := rc.finish(ctx, rec, storage.StateFailed, reasonInDoubt,
		"the rule no longer sends by "+rec.App+"/"+rec.TemplateID, storage.KeepCredit)
	return final, false, "", err
}

// clientMsgID is the client_msg_id of a template message: the send key,
// hashed to fit. Every attempt of a send carries the same one, so WeChat
// itself refuses a repeat (45065) within its window.
func clientMsgID(key string) string {
	h := sha256.Sum256([]byte(key))
	return "wxb-" + hex.EncodeToString(h[:24])
}

// send makes the WeChat call of a route's channel.
func (b *Bridge) send(ctx context.Context, rt route, rec storage.SendRecord) (string, error) {
	r := rt.rendered
	mp := wechat.MiniProgram{}
	if r.MiniProgram != nil {
		mp = wechat.MiniProgram{AppID: r.MiniProgram.AppID, PagePath: r.MiniProgram.PagePath}
	}
	switch r.Channel {
	case rules.ChannelTemplateMessage:
		return b.cfg.WeChat.SendTemplate(ctx, r.App, wechat.TemplateMessage{ToUser: rec.OpenID, TemplateID: r.TemplateID,
			URL: r.URL, MiniProgram: mp, ClientMsgID: clientMsgID(rec.Key), Data: r.Data})
	case rules.ChannelSubscriptionNotification:
		return b.cfg.WeChat.SendBizSubscribe(ctx, r.App, wechat.BizMessage{ToUser: rec.OpenID, TemplateID: r.TemplateID,
			Page: r.URL, MiniProgram: mp, Data: r.Data})
	}
	return b.cfg.WeChat.Send(ctx, r.App, wechat.Message{ToUser: rec.OpenID, TemplateID: r.TemplateID, Page: r.Page,
		Data: r.Data, State: r.State, Lang: r.Lang})
}

// spanName names the span of a channel's WeChat call.
func spanName(channel string) string {
	switch channel {
	case rules.ChannelTemplateMessage:
		return "wechat.template.send"
	case rules.ChannelSubscriptionNotification:
		return "wechat.subscribe.bizsend"
	}
	return "wechat.subscribe.send"
}

// unreached records a recipient no channel could reach: skipped, with the
// first channel's reason, and every channel's in errmsg.
func (b *Bridge) unreached(ctx context.Context, rc *recorder, rec storage.SendRecord, tried []string, reasons []string) (bool, error) {
	msg := ""
	if len(tried) > 1 {
		parts := make([]string, len(tried))
		for i := range tried {
			parts[i] = tried[i] + ": " + reasons[i]
		}
		msg = strings.Join(parts, "; ")
	}
	return rc.finish(ctx, rec, storage.StateSkipped, reasons[0], msg, storage.KeepCredit)
}
