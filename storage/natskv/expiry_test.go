package natskv_test

import (
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/natskv"
)

// The server expires what only guards against repeats, by the TTL each
// key was written with; unfinished work never expires, and Expire has
// nothing to do.
func TestServerExpiry(t *testing.T) {
	s := open(t, connect(t, srv.Connect), natskv.Options{Bucket: newBucket(), MarkerTTL: time.Second,
		Retention: storage.Retention{Sends: 2 * time.Second, Pushes: time.Second}})
	req := func(event string) storage.ReserveRequest {
		return storage.ReserveRequest{Owner: s.Owner(), Record: storage.SendRecord{Key: storage.SendKey(event, "r", "u:u1"),
			EventID: event, EventType: "t", Rule: "r", App: "main", TemplateID: "T", UserID: "u1", OpenID: "o1"}}
	}
	sent := req("old")
	sent.DedupeKey, sent.DedupeWindow = storage.Key("r", "order-7", "u1"), time.Second
	res, err := s.Reserve(ctx, sent)
	if err != nil {
		t.Fatal(err)
	}
	rec := res.Record
	rec.State, rec.MsgID = storage.StateSent, "42"
	if _, _, err := s.CompleteEvent(ctx, rec, storage.KeepCredit, nil); err != nil {
		t.Fatal(err)
	}
	stuck, err := s.Reserve(ctx, req("stuck"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyPush(ctx, storage.PushChanges{DedupeKey: "push-1"}); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Expire(ctx, storage.Retention{}); err != nil || st != (storage.ExpireStats{}) {
		t.Fatalf("expire: %+v %v", st, err)
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		// The server expires each key by its own TTL: the record and the
		// event mark written in one batch go within moments of each other.
		_, kept, err := s.Send(ctx, rec.Key)
		if err != nil {
			t.Fatal(err)
		}
		_, done, err := s.EventDone(ctx, "old")
		if err != nil {
			t.Fatal(err)
		}
		if !kept && !done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("past their retention by 28 s: send record kept %v, event mark kept %v", kept, done)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r, err := s.ApplyPush(ctx, storage.PushChanges{DedupeKey: "push-1",
		Deliveries: []storage.Delivery{{MsgID: "42", Status: "delivered"}}}); err != nil || r.Duplicate || len(r.UnknownMsgIDs) != 1 {
		t.Fatalf("after expiry the push key and the msgid index are gone: %+v %v", r, err)
	}
	if got, ok, _ := s.Send(ctx, stuck.Record.Key); !ok || got.State != storage.StatePending {
		t.Fatalf("an unfinished (pending) record expired: %+v", got)
	}
	// The dedupe mark went with its window: nothing is left to suppress.
	again := req("again")
	again.DedupeKey, again.DedupeWindow = sent.DedupeKey, time.Hour
	if r, err := s.Reserve(ctx, again); err != nil || r.Outcome != storage.Reserved {
		t.Fatalf("dedupe mark after its window: %+v %v", r, err)
	}
}
