package natskv_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/natskv"
)

var ctx = context.Background()

// drain takes everything the outbox hands out until it is quiet, and
// acknowledges it.
func drain(t *testing.T, s *natskv.Store) []storage.OutboxEntry {
	t.Helper()
	var all []storage.OutboxEntry
	for {
		got, err := s.NextOutbox(ctx, 100, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			return all
		}
		s.Published(ctx, got, nil)
		all = append(all, got...)
	}
}

func subjects(entries []storage.OutboxEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Subject)
	}
	return out
}

// An acknowledgement lost after the server committed a batch: the store
// sends the same batch again, the server recognises it by its
// Nats-Msg-Id, and nothing is written twice: one credit spent, one
// ledger announcement, one result, one accept.
func TestLostAcknowledgement(t *testing.T) {
	testLostAck(t, open(t, connect(t, srv.Connect), natskv.Options{Bucket: newBucket(), LedgerHook: subsHook}))
}

func subsHook(s storage.Subscription) []storage.OutboxMessage {
	return []storage.OutboxMessage{{Subject: "subs", Payload: []byte(fmt.Sprint(s.Credits))}}
}

func testLostAck(t *testing.T, s *natskv.Store) {
	t.Helper()
	accept := storage.SubscriptionChange{App: "main", OpenID: "o1", TemplateID: "T", Status: storage.StatusAccept,
		Source: storage.SourceClient, At: time.Now()}

	s.DropAcks(1)
	if sub, err := s.ApplySubscription(ctx, accept); err != nil || sub.Credits != 1 {
		t.Fatalf("accept with its ack lost: %+v %v", sub, err)
	}
	accept.At = accept.At.Add(time.Hour)
	if _, err := s.ApplySubscription(ctx, accept); err != nil {
		t.Fatal(err)
	}
	if sub, _, _ := s.Subscription(ctx, "main", "o1", "T"); sub.Credits != 2 {
		t.Fatalf("two accepts, one ack lost: %d credits", sub.Credits)
	}

	rec := storage.SendRecord{Key: storage.SendKey("e1", "r", "u:u1"), EventID: "e1", EventType: "t", Rule: "r",
		App: "main", TemplateID: "T", UserID: "u1", OpenID: "o1"}
	s.DropAcks(1)
	res, err := s.Reserve(ctx, storage.ReserveRequest{Record: rec, Owner: s.Owner(), CheckCredit: true, ResendInDoubt: true})
	if err != nil || res.Outcome != storage.Reserved || res.Record.Attempts != 1 || res.Record.InDoubt {
		t.Fatalf("reserve with its ack lost: %+v %v", res, err)
	}
	if sub, _, _ := s.Subscription(ctx, "main", "o1", "T"); sub.Credits != 1 {
		t.Fatalf("one reservation spent %d credits", 2-sub.Credits)
	}
	done := res.Record
	done.State, done.MsgID = storage.StateSent, "42"
	s.DropAcks(1)
	saved, applied, err := s.CompleteEvent(ctx, done, storage.KeepCredit, func(r storage.SendRecord) []storage.OutboxMessage {
		return []storage.OutboxMessage{{Subject: "results", MsgID: "r:" + r.Key, Payload: []byte(r.State)}}
	})
	if err != nil || !applied || saved.State != storage.StateSent || saved.InDoubt {
		t.Fatalf("complete with its ack lost: %+v %v %v", saved, applied, err)
	}
	// One message alone (no batch) is recognised the same way.
	s.DropAcks(1)
	if err := s.Enqueue(ctx, storage.OutboxMessage{Subject: "alone", MsgID: "a"}); err != nil {
		t.Fatal(err)
	}
	got := subjects(drain(t, s))
	if want := "[subs subs subs results alone]"; fmt.Sprint(got) != want {
		t.Fatalf("outbox %v, want %s", got, want)
	}
	if rec, _, _ := s.Send(ctx, rec.Key); rec.State != storage.StateSent || rec.Attempts != 1 || rec.InDoubt {
		t.Fatalf("record %+v", rec)
	}
	if _, ok, _ := s.EventDone(ctx, "e1"); !ok {
		t.Fatal("event not marked done")
	}
}
