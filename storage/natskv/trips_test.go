package natskv_test

import (
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/natskv"
)

func TestThreeRoundTripsPerRecipient(t *testing.T) {
	hook := func(s storage.Subscription) []storage.OutboxMessage {
		return []storage.OutboxMessage{{Subject: "subs"}}
	}
	testRoundTrips(t, open(t, connect(t, srv.Connect), natskv.Options{Bucket: newBucket(), LedgerHook: hook}))
}

// testRoundTrips follows one recipient of a one-recipient event the way
// the bridge does (lookup, reserve spending a credit, outcome marking the
// event done): three requests, and the revision Reserve reports is the
// record's (a batch's messages have consecutive sequences).
func testRoundTrips(t *testing.T, s *natskv.Store) {
	t.Helper()
	if _, err := s.Bind(ctx, storage.Binding{App: "main", UserID: "u1", OpenID: "o1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplySubscription(ctx, storage.SubscriptionChange{App: "main", OpenID: "o1", TemplateID: "T",
		Status: storage.StatusAccept, Source: storage.SourceClient, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	rec := storage.SendRecord{Key: storage.SendKey("e1", "r", "u:u1"), EventID: "e1", EventType: "t", Rule: "r",
		App: "main", TemplateID: "T", UserID: "u1"}
	before := s.RoundTrips()
	f, err := s.Lookup(ctx, storage.Lookup{EventKey: "e1", SendKey: rec.Key, App: "main", UserID: "u1", TemplateID: "T"})
	if err != nil || !f.Bound || f.HasRecord || f.EventDone {
		t.Fatalf("lookup: %+v %v", f, err)
	}
	rec.OpenID = f.Binding.OpenID
	res, err := s.Reserve(ctx, storage.ReserveRequest{Record: rec, Owner: s.Owner(), CheckCredit: true,
		Kind: storage.KindOneTime, ResendInDoubt: true, Snapshot: f.Snapshot})
	if err != nil || res.Outcome != storage.Reserved || !res.Record.CreditTaken {
		t.Fatalf("reserve: %+v %v", res, err)
	}
	reserved := res.Record
	done := res.Record
	done.State, done.MsgID = storage.StateSent, "1"
	if _, applied, err := s.CompleteEvent(ctx, done, storage.KeepCredit, func(storage.SendRecord) []storage.OutboxMessage {
		return []storage.OutboxMessage{{Subject: "results"}}
	}); err != nil || !applied {
		t.Fatalf("complete: %v %v", applied, err)
	}
	if n := s.RoundTrips() - before; n != 3 {
		t.Fatalf("one recipient cost %d round trips, want 3", n)
	}
	got, _, err := s.Send(ctx, rec.Key)
	if err != nil || got.State != storage.StateSent || got.Rev <= reserved.Rev || reserved.Rev == 0 {
		t.Fatalf("record %+v after reserving at revision %d: %v", got, reserved.Rev, err)
	}
	if _, done, _ := s.EventDone(ctx, "e1"); !done {
		t.Fatal("event not done")
	}
}

// A lookup's snapshot is read before the bridge waits for its turn: a
// credit granted meanwhile is spent, not missed (a decision that writes
// nothing is made again on fresh reads).
func TestStaleSnapshotMissesNoCredit(t *testing.T) {
	bucket := newBucket()
	s := open(t, connect(t, srv.Connect), natskv.Options{Bucket: bucket})
	other := open(t, connect(t, srv.Connect), natskv.Options{Bucket: bucket})
	rec := pendingReq(s, "e1").Record
	f, err := s.Lookup(ctx, storage.Lookup{SendKey: rec.Key, App: "main", OpenID: "o1", TemplateID: "T"})
	if err != nil {
		t.Fatal(err)
	}
	// Another bridge grants it.
	if _, err := other.ApplySubscription(ctx, storage.SubscriptionChange{App: "main", OpenID: "o1", TemplateID: "T",
		Status: storage.StatusAccept, Source: storage.SourceClient, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Reserve(ctx, storage.ReserveRequest{Record: rec, Owner: s.Owner(), CheckCredit: true, Snapshot: f.Snapshot})
	if err != nil || res.Outcome != storage.Reserved || !res.Record.CreditTaken {
		t.Fatalf("reserve on a snapshot older than the credit: %+v %v", res, err)
	}
}
