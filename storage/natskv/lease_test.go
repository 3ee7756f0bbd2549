package natskv_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/natskv"
)

func pendingReq(s *natskv.Store, event string) storage.ReserveRequest {
	return storage.ReserveRequest{Owner: s.Owner(), ResendInDoubt: true, Record: storage.SendRecord{Key: storage.SendKey(event, "r", "u:u1"),
		EventID: event, EventType: "t", Rule: "r", App: "main", TemplateID: "T", UserID: "u1", OpenID: "o1"}}
}

// A bridge's lease is current while it renews it, lapses (on its own
// clock) when renewals stop, and goes at once when it closes: its pending
// records are then in doubt for the others without waiting for the TTL.
func TestLease(t *testing.T) {
	bucket := newBucket()
	opts := natskv.Options{Bucket: bucket, LeaseTTL: 2 * time.Second}
	a := open(t, connect(t, srv.Connect), opts)
	b := open(t, connect(t, srv.Connect), opts)
	if a.Lease() != nil || b.Lease() != nil || a.Owner() == b.Owner() {
		t.Fatalf("fresh leases: %v %v, owners %s %s", a.Lease(), b.Lease(), a.Owner(), b.Owner())
	}
	time.Sleep(3 * time.Second) // longer than the TTL: renewals keep it
	if err := a.Lease(); err != nil {
		t.Fatalf("renewed lease: %v", err)
	}
	if _, err := a.Reserve(ctx, pendingReq(a, "e1")); err != nil {
		t.Fatal(err)
	}
	if r, err := b.Reserve(ctx, pendingReq(b, "e1")); err != nil || r.Outcome != storage.Busy {
		t.Fatalf("a's record while a lives: %+v %v", r, err)
	}
	a.Close()
	if r, err := b.Reserve(ctx, pendingReq(b, "e1")); err != nil || r.Outcome != storage.Reserved || !r.Record.InDoubt {
		t.Fatalf("a's record once a closed: %+v %v", r, err)
	}
	if _, err := a.Reserve(ctx, pendingReq(a, "e2")); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("reserve after close: %v", err)
	}

	b.StopRenewals()
	deadline := time.Now().Add(30 * time.Second)
	for b.Lease() == nil {
		if time.Now().After(deadline) {
			t.Fatal("b's lease still current 30 s after its renewals stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// What the server can never accept is storage.ErrInvalid, and says what
// was being done; nothing of it is written.
func TestInvalidInput(t *testing.T) {
	s := open(t, connect(t, srv.Connect), natskv.Options{Bucket: newBucket()})
	rec := pendingReq(s, "big").Record
	_, err := s.Defer(ctx, rec, time.Now().Add(time.Hour), make([]byte, 9<<20))
	if !errors.Is(err, storage.ErrInvalid) || !strings.Contains(err.Error(), "defer send big/r/u:u1") {
		t.Fatalf("an oversized deferred payload: %v", err)
	}
	if _, ok, _ := s.Send(ctx, rec.Key); ok {
		t.Fatal("half of a refused batch was written")
	}
	err = s.MarkEventDone(ctx, "e1", "t", storage.OutboxMessage{Subject: "a", Header: map[string]string{"H": "x\r\nPUB y 1"}})
	if !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("a header that would break the protocol: %v", err)
	}
	if _, done, _ := s.EventDone(ctx, "e1"); done {
		t.Fatal("the event was marked done without its messages")
	}
	if err := s.Enqueue(ctx, storage.OutboxMessage{Subject: ""}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("no subject: %v", err)
	}
}

// More writers than the server takes batches at once on one stream: the
// refused batches are sent again after a pause, every one commits once.
func TestBatchesBeyondTheServersLimit(t *testing.T) {
	s := open(t, connect(t, srv.Connect), natskv.Options{Bucket: newBucket(), MaxBatches: 200})
	const writers = 120
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Enqueue(ctx, storage.OutboxMessage{Subject: "a", MsgID: fmt.Sprint(i)},
				storage.OutboxMessage{Subject: "b", MsgID: fmt.Sprint(i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := len(drain(t, s)); got != 2*writers {
		t.Fatalf("%d entries queued, want %d", got, 2*writers)
	}
}

// Relayed outbox entries and settled due messages are purged: the stream
// keeps only what is not done.
func TestRelayedEntriesArePurged(t *testing.T) {
	bucket := newBucket()
	nc := connect(t, srv.Connect)
	s := open(t, nc, natskv.Options{Bucket: bucket})
	for i := range 20 {
		if err := s.Enqueue(ctx, storage.OutboxMessage{Subject: "a", MsgID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	rec := pendingReq(s, "quiet").Record
	if _, err := s.Defer(ctx, rec, time.Now(), []byte("w")); err != nil {
		t.Fatal(err)
	}
	if n := len(drain(t, s)); n != 20 {
		t.Fatalf("relayed %d", n)
	}
	var due []storage.Deferred
	for deadline := time.Now().Add(30 * time.Second); len(due) == 0 && time.Now().Before(deadline); {
		var err error
		if due, err = s.WaitDue(ctx, 10, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if len(due) != 1 {
		t.Fatalf("due %+v", due)
	}
	if err := s.Settle(ctx, due[0], time.Time{}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter("$WXB."+bucket+".>"))
		if err != nil {
			t.Fatal(err)
		}
		if len(info.State.Subjects) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still in the stream 30 s after relaying: %v", info.State.Subjects)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
