package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxbridge/wxbridge/storage"
)

// Result is the payload published on wxbridge.results.<event type>: one
// per (event, rule, recipient) outcome, and later delivery receipts.
type Result struct {
	EventID string `json:"event_id"`
	// EventSource is the CloudEvents source of the event; with EventID, the
	// event's identity. Empty for events that are not CloudEvents.
	EventSource string `json:"event_source,omitempty"`
	EventType   string `json:"event_type"`
	Rule        string `json:"rule"`
	App         string `json:"app"`
	TemplateID  string `json:"template_id"`
	// Template names the template in the rules, and Channel says how it
	// was sent: subscribe_message (a mini program's), template_message or
	// subscription_notification (an official account's). Empty when the
	// rules in force no longer have it.
	Template string    `json:"template,omitempty"`
	Channel  string    `json:"channel,omitempty"`
	UserID   string    `json:"user_id"`
	OpenID   string    `json:"openid"`
	Status   string    `json:"status"` // sent, skipped, failed, delivered, undelivered
	Reason   string    `json:"reason"`
	ErrCode  int       `json:"errcode"`
	ErrMsg   string    `json:"errmsg"`
	MsgID    string    `json:"msgid"`
	Attempts int       `json:"attempts"`
	InDoubt  bool      `json:"in_doubt"`
	At       time.Time `json:"at"`
	// TraceID is the W3C trace id of the event's handling: the trace the
	// event came with, or one of its own.
	TraceID string `json:"trace_id,omitempty"`
}

// Result statuses.
const (
	StatusSent        = "sent"
	StatusSkipped     = "skipped"
	StatusFailed      = "failed"
	StatusDelivered   = "delivered"
	StatusUndelivered = "undelivered"
)

func resultOf(rec storage.SendRecord) Result {
	source, id := splitEventKey(rec.EventID)
	r := Result{EventID: id, EventSource: source, EventType: rec.EventType, Rule: rec.Rule, App: rec.App, TemplateID: rec.TemplateID,
		UserID: rec.UserID, OpenID: rec.OpenID, Status: rec.State, Reason: rec.Reason, ErrCode: rec.ErrCode, ErrMsg: rec.ErrMsg,
		MsgID: rec.MsgID, Attempts: rec.Attempts, InDoubt: rec.InDoubt, At: rec.UpdatedAt, TraceID: traceIDOf(rec.Trace)}
	if rec.Delivery != "" {
		// A delivery receipt: WeChat's final word on a sent message.
		r.Status, r.Reason, r.ErrCode, r.ErrMsg = rec.Delivery, "", rec.DeliveryCode, rec.DeliveryMsg
	}
	return r
}

// resultMessage builds the outbox message announcing rec's state. Its
// Nats-Msg-Id is derived from the record and the status, so a copy
// published twice (a crash between publish and outbox delete) is dropped
// by JetStream; variant tells apart announcements of the same status that
// are distinct (duplicate reports of several republications).
func (b *Bridge) resultMessage(rec storage.SendRecord, variant string) storage.OutboxMessage {
	r := resultOf(rec)
	if set := b.rules.Load(); set != nil {
		if t := set.TemplateOf(rec.App, rec.TemplateID); t != nil {
			r.Template, r.Channel = t.Name, t.Channel()
		}
	}
	payload, _ := json.Marshal(r) // a struct of strings and numbers: cannot fail
	h := sha256.Sum256([]byte(rec.Key + "\x00" + r.Status + "\x00" + r.Reason + "\x00" + variant))
	m := storage.OutboxMessage{
		Subject: b.subject("results." + subjectToken(rec.EventType)),
		MsgID:   "r:" + hex.EncodeToString(h[:16]),
		Payload: payload,
	}
	if rec.Trace != "" {
		m.Header = map[string]string{"traceparent": rec.Trace}
	}
	return m
}

// subjectToken makes an event type safe to use as subject tokens.
func subjectToken(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n', '*', '>':
			return '_'
		}
		return r
	}, strings.Trim(strings.ReplaceAll(s, "..", "._."), "."))
}

func (b *Bridge) js() jetstream.JetStream {
	b.jsOnce.Do(func() {
		js, err := jetstream.New(b.cfg.Conn)
		if err != nil {
			panic(fmt.Sprintf("jetstream context: %v", err)) // only fails for a nil connection, ruled out by Validate
		}
		b.jsCtx = js
	})
	return b.jsCtx
}

const outboxBatch = 512

// publishOutbox relays queued messages to NATS until ctx ends. A batch
// that fails is handed out again after a pause; JetStream drops a copy
// published twice by its Nats-Msg-Id.
func (b *Bridge) publishOutbox(ctx context.Context) {
	for ctx.Err() == nil {
		n, failed := b.relayBatch(ctx, time.Second)
		if failed > 0 && ctx.Err() == nil {
			b.metrics.outboxFails.Inc()
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
		_ = n
	}
}

// flushOutbox publishes until the outbox is empty or grace is over.
func (b *Bridge) flushOutbox(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for ctx.Err() == nil {
		n, failed := b.relayBatch(ctx, 50*time.Millisecond)
		if n == 0 && failed == 0 {
			return
		}
		if failed > 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// relayBatch publishes what the outbox hands out (waiting up to wait for
// some), pipelined, and settles it. It returns how many it published and
// how many failed.
func (b *Bridge) relayBatch(ctx context.Context, wait time.Duration) (published, failed int) {
	entries, err := b.cfg.Store.NextOutbox(ctx, outboxBatch, wait)
	if err != nil {
		if ctx.Err() == nil {
			b.repeats.warn(b.log, "read outbox; will retry", "err", err)
			time.Sleep(100 * time.Millisecond)
		}
		return 0, 0
	}
	if len(entries) == 0 {
		return 0, 0
	}
	js := b.js()
	futures := make([]jetstream.PubAckFuture, len(entries))
	spans := make([]trace.Span, len(entries))
	defer func() {
		for _, sp := range spans {
			if sp != nil {
				sp.End()
			}
		}
	}()
	var done, retry []storage.OutboxEntry
	for i, e := range entries {
		if e.Err != nil {
			b.log.Error("unreadable outbox entry dropped", "seq", e.Seq, "err", e.Err)
			done = append(done, e)
			continue
		}
		m := nats.NewMsg(e.Subject)
		m.Data = e.Payload
		for k, v := range e.Header {
			m.Header.Set(k, v)
		}
		if e.MsgID != "" {
			m.Header.Set(nats.MsgIdHdr, e.MsgID)
		}
		if tp := e.Header["traceparent"]; tp != "" {
			// The publication is a span of the event's trace, and what
			// downstream consumers receive continues from it.
			pctx := traceContext.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
			pctx, sp := b.tracer.Start(pctx, "wxbridge.result.publish", trace.WithSpanKind(trace.SpanKindProducer),
				trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", e.Subject)))
			m.Header.Set("traceparent", traceparentOf(pctx))
			spans[i] = sp
		}
		f, err := js.PublishMsgAsync(m)
		switch {
		case errors.Is(err, nats.ErrMaxPayload):
			// It will never fit: holding it would hold every entry behind it.
			b.log.Error("outbox entry too large to publish; dropped", "seq", e.Seq, "subject", e.Subject, "bytes", len(e.Payload))
			done = append(done, e)
		case err != nil:
			b.repeats.warn(b.log, "publish outbox; will retry", "err", err)
			retry = append(retry, entries[i:]...)
			entries = entries[:i]
		default:
			futures[i] = f
		}
		if err != nil && !errors.Is(err, nats.ErrMaxPayload) {
			break
		}
	}
	for i, e := range entries {
		if futures[i] == nil {
			continue
		}
		select {
		case <-futures[i].Ok():
			done = append(done, e)
		case err := <-futures[i].Err():
			b.repeats.warn(b.log, "publish outbox; will retry", "subject", e.Subject, "err", err)
			if spans[i] != nil {
				spans[i].SetStatus(codes.Error, clipN(err.Error(), 200))
			}
			retry = append(retry, e)
		case <-ctx.Done():
			retry = append(retry, e)
		}
	}
	b.cfg.Store.Published(context.WithoutCancel(ctx), done, retry)
	return len(done), len(retry)
}

// SubscriptionChange is the payload published on
// wxbridge.subscriptions.<app> for every ledger change.
type SubscriptionChange struct {
	App        string    `json:"app"`
	OpenID     string    `json:"openid"`
	UserID     string    `json:"user_id"`
	UnionID    string    `json:"unionid,omitempty"`
	TemplateID string    `json:"template_id"`
	Status     string    `json:"status"`
	Kind       string    `json:"kind"`
	Credits    int       `json:"credits"`
	Source     string    `json:"source"`
	At         time.Time `json:"at"`
}

func subscriptionChange(s storage.Subscription) SubscriptionChange {
	return SubscriptionChange{App: s.App, OpenID: s.OpenID, UserID: s.UserID, UnionID: s.UnionID, TemplateID: s.TemplateID, Status: s.Status,
		Kind: s.Kind, Credits: s.Credits, Source: s.Source, At: s.UpdatedAt}
}

// LedgerHook announces ledger changes on prefix.subscriptions.<app>. Give
// it to storage.Open so that every change is queued in the transaction
// that makes it.
func LedgerHook(prefix string) storage.LedgerHook {
	if prefix == "" {
		prefix = "wxbridge"
	}
	return func(s storage.Subscription) []storage.OutboxMessage {
		payload, _ := json.Marshal(subscriptionChange(s))
		h := sha256.Sum256(payload)
		return []storage.OutboxMessage{{
			Subject: prefix + ".subscriptions." + subjectToken(s.App),
			MsgID:   "s:" + hex.EncodeToString(h[:16]),
			Payload: payload,
		}}
	}
}
