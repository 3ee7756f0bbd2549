package bridge

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/wechat"
)

// PushConfig gives the push settings of an app named in the rules, for
// wechat.PushHandler. An app without a push token has no callback; one
// with an aes_key takes only encrypted pushes unless its
// allow_plaintext_push is set.
func (b *Bridge) PushConfig(app string) (wechat.PushConfig, bool) {
	a, ok := b.rules.Load().Apps[app]
	if !ok || a.PushToken == "" {
		return wechat.PushConfig{}, false
	}
	return wechat.PushConfig{AppID: a.AppID, Token: a.PushToken, EncodingAESKey: a.AESKey,
		AllowPlaintext: a.AllowPlaintextPush}, true
}

// warnPushSecurity says, when rules are put in force, which apps take
// pushes whose signature does not cover the body.
func (b *Bridge) warnPushSecurity(s *rules.Set) {
	for _, name := range slices.Sorted(maps.Keys(s.Apps)) {
		a := s.Apps[name]
		switch {
		case a.PushToken == "":
		case a.AESKey != "" && a.AllowPlaintextPush:
			b.log.Warn("app accepts plaintext pushes although it has an aes_key (allow_plaintext_push: true): "+
				"their signature does not cover the body, so anyone who sees one push URL can forge "+
				"subscription changes and delivery reports for five minutes; switch the console to safe mode "+
				"and remove allow_plaintext_push", "app", name)
		case a.AESKey == "":
			b.log.Warn("app has a push_token but no aes_key, so its pushes are plaintext: their signature does not "+
				"cover the body, so anyone who sees one push URL can forge subscription changes and delivery "+
				"reports for five minutes; set aes_key and switch the console to safe mode", "app", name)
		}
	}
}

// HandlePush applies one verified WeChat push (wechat.PushHandler.Handle):
// subscription popups and changes go to the ledger, delivery reports become
// delivered/undelivered results. WeChat's retries of a push change nothing.
func (b *Bridge) HandlePush(ctx context.Context, app string, p *wechat.Push) error {
	event := p.Event
	if event == "" {
		event = p.MsgType
	}
	at := time.Unix(p.CreateTime, 0)
	ch := storage.PushChanges{DedupeKey: app + "|" + p.DedupeKey(), Announce: func(rec storage.SendRecord) []storage.OutboxMessage {
		return []storage.OutboxMessage{b.resultMessage(rec, "delivery")}
	}}
	switch p.Event {
	case wechat.EventSubscribePopup, wechat.EventSubscribeChange:
		source := storage.SourcePopup
		if p.Event == wechat.EventSubscribeChange {
			source = storage.SourceChange
		}
		for _, s := range p.Subscriptions {
			status, ok := clientStatus(s.Status)
			if !ok {
				continue
			}
			ch.Subscriptions = append(ch.Subscriptions, storage.SubscriptionChange{App: app, OpenID: p.FromUserName,
				TemplateID: s.TemplateID, Status: status, Kind: b.templateKind(app, s.TemplateID), Source: source, At: at})
		}
	case wechat.EventSubscribeSent:
		for _, s := range p.Sent {
			d := storage.Delivery{MsgID: s.MsgID, Status: StatusDelivered, ErrCode: s.ErrorCode, ErrMsg: s.ErrorStatus}
			if s.ErrorCode != 0 {
				d.Status = StatusUndelivered
			}
			ch.Deliveries = append(ch.Deliveries, d)
		}
	case wechat.EventFollow, wechat.EventUnfollow:
		if p.Follow == nil {
			break
		}
		// FromUserName is the person's openid in the account; the unionid
		// comes from the user-info API when a send needs it.
		ch.Follows = append(ch.Follows, storage.FollowChange{App: app, OpenID: p.FromUserName, Following: p.Follow.Following,
			Source: storage.SourceFollowPush, At: at})
	case wechat.EventTemplateSendJobFinish:
		if job := p.TemplateJob; job != nil {
			// "failed:user block": the person refuses the account's
			// messages; "failed: system failed": anything else.
			d := storage.Delivery{MsgID: job.MsgID, Status: StatusDelivered, ErrMsg: job.Status}
			if !job.Delivered() {
				d.Status = StatusUndelivered
			}
			ch.Deliveries = append(ch.Deliveries, d)
		}
	}
	if len(ch.Subscriptions) == 0 && len(ch.Deliveries) == 0 && len(ch.Follows) == 0 {
		b.metrics.pushes.WithLabelValues(app, "other", "ignored").Inc()
		b.log.Debug("push ignored", "app", app, "msg_type", p.MsgType, "event", p.Event)
		return nil
	}
	res, err := b.cfg.Store.ApplyPush(ctx, ch)
	if err != nil {
		b.metrics.pushes.WithLabelValues(app, event, "error").Inc()
		return err
	}
	switch {
	case res.Duplicate:
		b.metrics.pushes.WithLabelValues(app, event, "duplicate").Inc()
	default:
		b.metrics.pushes.WithLabelValues(app, event, "applied").Inc()
		for _, rec := range res.Deliveries {
			b.metrics.result(rec.Delivery, "", rec.DeliveryCode)
		}
		if len(res.UnknownMsgIDs) > 0 {
			b.log.Info("delivery reports for unknown msgids", "app", app, "msgids", res.UnknownMsgIDs)
		}
	}
	return nil
}
