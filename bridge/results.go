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

	"github.com/wxbridge/wxbridge/storage"
)

// Result is the payload published on wxbridge.results.<event type>: one
// per (event, rule, recipient) outcome, and later delivery receipts.
type Result struct {
	EventID string `json:"event_id"`
	// EventSource is the CloudEvents source of the event; with EventID, the
	// event's identity. Empty for events that are not CloudEvents.
	EventSource string    `json:"event_source,omitempty"`
	EventType   string    `json:"event_type"`
	Rule        string    `json:"rule"`
	App         string    `json:"app"`
	TemplateID  string    `json:"template_id"`
	UserID      string    `json:"user_id"`
	OpenID      string    `json:"openid"`
	Status      string    `json:"status"` // sent, skipped, failed, delivered, undelivered
	Reason      string    `json:"reason"`
	ErrCode     int       `json:"errcode"`
	ErrMsg      string    `json:"errmsg"`
	MsgID       string    `json:"msgid"`
	Attempts    int       `json:"attempts"`
	InDoubt     bool      `json:"in_doubt"`
	At          time.Time `json:"at"`
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
		MsgID: rec.MsgID, Attempts: rec.Attempts, InDoubt: rec.InDoubt, At: rec.UpdatedAt}
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
	payload, _ := json.Marshal(r) // a struct of strings and numbers: cannot fail
	h := sha256.Sum256([]byte(rec.Key + "\x00" + r.Status + "\x00" + r.Reason + "\x00" + variant))
	return storage.OutboxMessage{
		Subject: b.subject("results." + subjectToken(rec.EventType)),
		MsgID:   "r:" + hex.EncodeToString(h[:16]),
		Payload: payload,
	}
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

// publishOutbox publishes queued messages until ctx ends, woken by commits
// that queued some and, as a safety net, every second. Published entries
// are forgotten lazily (with the next commit), so it reads on from the last
// one it published; after a failure it starts again from the first entry
// not known to be published, and JetStream drops the copies.
func (b *Bridge) publishOutbox(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var after uint64
	for {
		for {
			n, next, err := b.publishBatch(ctx, after)
			after = next
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				b.log.Warn("publish outbox; will retry", "err", err)
				b.metrics.outboxFails.Inc()
				break
			}
			if n < outboxBatch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-b.cfg.Store.OutboxReady():
		case <-tick.C:
		}
	}
}

// flushOutbox publishes until the outbox is empty or grace is over.
func (b *Bridge) flushOutbox(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var after uint64
	for ctx.Err() == nil {
		n, next, err := b.publishBatch(ctx, after)
		after = next
		if err != nil {
			b.log.Warn("flush outbox", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if n == 0 {
			return
		}
	}
}

// publishBatch publishes up to outboxBatch messages after seq after,
// pipelined, and forgets those the server acknowledged. It returns how many
// it read and the seq up to which everything is published.
func (b *Bridge) publishBatch(ctx context.Context, after uint64) (int, uint64, error) {
	entries, err := b.cfg.Store.Outbox(ctx, after, outboxBatch)
	if err != nil || len(entries) == 0 {
		return 0, after, err
	}
	js := b.js()
	futures := make([]jetstream.PubAckFuture, len(entries))
	sent := len(entries)
	for i, e := range entries {
		if e.Err != nil {
			b.log.Error("unreadable outbox entry dropped", "seq", e.Seq, "err", e.Err)
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
		if futures[i], err = js.PublishMsgAsync(m); err != nil {
			if errors.Is(err, nats.ErrMaxPayload) {
				// It will never fit: holding it would hold every entry
				// behind it forever.
				b.log.Error("outbox entry too large to publish; dropped", "seq", e.Seq, "subject", e.Subject, "bytes", len(e.Payload))
				b.metrics.outboxFails.Inc()
				futures[i], err = nil, nil
				continue
			}
			sent = i
			break
		}
	}
	done := make([]uint64, 0, sent)
	published := after // everything up to here is published
	contiguous := true
	firstErr := err
	for i := 0; i < sent; i++ {
		ok := futures[i] == nil // an unreadable entry: nothing to wait for
		if !ok {
			select {
			case <-futures[i].Ok():
				ok = true
			case e := <-futures[i].Err():
				if firstErr == nil {
					firstErr = fmt.Errorf("publish %s: %w", entries[i].Subject, e)
				}
			case <-ctx.Done():
				if firstErr == nil {
					firstErr = ctx.Err()
				}
			}
		}
		if ok {
			done = append(done, entries[i].Seq)
		}
		contiguous = contiguous && ok
		if contiguous {
			published = entries[i].Seq
		}
	}
	b.cfg.Store.ForgetOutbox(done...)
	return len(entries), published, firstErr
}

// SubscriptionChange is the payload published on
// wxbridge.subscriptions.<app> for every ledger change.
type SubscriptionChange struct {
	App        string    `json:"app"`
	OpenID     string    `json:"openid"`
	UserID     string    `json:"user_id"`
	TemplateID string    `json:"template_id"`
	Status     string    `json:"status"`
	Kind       string    `json:"kind"`
	Credits    int       `json:"credits"`
	Source     string    `json:"source"`
	At         time.Time `json:"at"`
}

func subscriptionChange(s storage.Subscription) SubscriptionChange {
	return SubscriptionChange{App: s.App, OpenID: s.OpenID, UserID: s.UserID, TemplateID: s.TemplateID, Status: s.Status,
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
