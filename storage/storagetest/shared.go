package storagetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/storage"
)

// runShared runs the cases of two bridges on one state.
func runShared(t *testing.T, open SharedOpener) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, SharedOpener)
	}{
		{"SharedReserveIsBusy", testSharedBusy},
		{"SharedOwnerDies", testSharedOwnerDies},
		{"SharedCompleteOnce", testSharedCompleteOnce},
		{"SharedLateCompletion", testSharedLateCompletion},
		{"SharedConcurrentCredits", testSharedCredits},
		{"SharedOutbox", testSharedOutbox},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

func ownReq(s Store, event string, checkCredit bool) storage.ReserveRequest {
	return reserveReq(event, s.Owner(), checkCredit)
}

// A record pending at a live bridge is busy for the other: nothing changes.
func testSharedBusy(t *testing.T, open SharedOpener) {
	c := NewClock()
	a, b, _ := open(t, c, nil)
	must[storage.Subscription](t)(a.ApplySubscription(ctx, accept(storage.SourceClient, c.Now())))
	if r := must[storage.ReserveResult](t)(a.Reserve(ctx, ownReq(a, "e1", true))); r.Outcome != storage.Reserved {
		t.Fatalf("a: %+v", r)
	}
	for _, resend := range []bool{true, false} {
		req := ownReq(b, "e1", true)
		req.ResendInDoubt = resend
		if r := must[storage.ReserveResult](t)(b.Reserve(ctx, req)); r.Outcome != storage.Busy || r.Record.Owner != a.Owner() {
			t.Fatalf("b (resend %v) while a is alive: %+v", resend, r)
		}
	}
	if rec, _, _ := b.Send(ctx, reserveReq("e1", "", false).Record.Key); rec.Owner != a.Owner() || rec.InDoubt || rec.Attempts != 1 {
		t.Fatalf("b changed a's record: %+v", rec)
	}
	if n := credits(t, b); n != 0 {
		t.Fatalf("credits %d", n)
	}
}

// waitTakeover asks b to reserve key until a's lease has lapsed.
func waitTakeover(t *testing.T, b Store, req storage.ReserveRequest) storage.ReserveResult {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := must[storage.ReserveResult](t)(b.Reserve(ctx, req))
		if r.Outcome != storage.Busy {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("still busy 30 s after the owner's lease lapsed: %+v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A bridge that dies leaves its pending record in doubt: exactly one other
// bridge takes it over, and its credit pays for the resend.
func testSharedOwnerDies(t *testing.T, open SharedOpener) {
	c := NewClock()
	a, b, lapse := open(t, c, nil)
	must[storage.Subscription](t)(a.ApplySubscription(ctx, accept(storage.SourceClient, c.Now())))
	must[storage.ReserveResult](t)(a.Reserve(ctx, ownReq(a, "e1", true)))
	lapse()
	if a.Lease() == nil {
		// The dead bridge must not start a WeChat call without a lease.
		deadline := time.Now().Add(30 * time.Second)
		for a.Lease() == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if a.Lease() == nil {
			t.Fatal("a's lease still current 30 s after it lapsed")
		}
	}
	atMostOnce := ownReq(b, "e1", true)
	atMostOnce.ResendInDoubt = false
	if r := waitTakeover(t, b, atMostOnce); r.Outcome != storage.InDoubt {
		t.Fatalf("at_most_once after the owner died: %+v", r)
	}
	r := must[storage.ReserveResult](t)(b.Reserve(ctx, ownReq(b, "e1", true)))
	if r.Outcome != storage.Reserved || !r.Record.InDoubt || r.Record.Owner != b.Owner() || r.Record.Attempts != 2 {
		t.Fatalf("takeover: %+v", r)
	}
	if n := credits(t, b); n != 0 {
		t.Fatalf("a second credit was taken: %d left of 1", n)
	}
}

// Two bridges completing the same record: one outcome is recorded and
// announced.
func testSharedCompleteOnce(t *testing.T, open SharedOpener) {
	c := NewClock()
	a, b, _ := open(t, c, nil)
	res := must[storage.ReserveResult](t)(a.Reserve(ctx, ownReq(a, "e1", false)))
	var mu sync.Mutex
	applied, announced := 0, 0
	var wg sync.WaitGroup
	for i, s := range []Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := res.Record
			rec.State, rec.MsgID = storage.StateSent, fmt.Sprint(100+i)
			_, ok, err := s.Complete(ctx, rec, storage.KeepCredit, func(storage.SendRecord) []storage.OutboxMessage {
				mu.Lock()
				announced++
				mu.Unlock()
				return []storage.OutboxMessage{{Subject: "results.t", MsgID: fmt.Sprint("r", i)}}
			})
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				applied++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if applied != 1 {
		t.Fatalf("%d completions applied", applied)
	}
	// A backend may build announcements for a write it then loses; only the
	// applied one may reach the outbox.
	var got []storage.OutboxEntry
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		got = append(got, must[[]storage.OutboxEntry](t)(a.NextOutbox(ctx, 10, 200*time.Millisecond))...)
		if len(got) > 0 {
			time.Sleep(300 * time.Millisecond)
			got = append(got, must[[]storage.OutboxEntry](t)(a.NextOutbox(ctx, 10, 200*time.Millisecond))...)
			break
		}
	}
	if len(got) != 1 {
		t.Fatalf("outbox holds %d results for one outcome (%d built)", len(got), announced)
	}
}

// A bridge whose lease lapsed mid-send completes after another took its
// record over: its send stands (WeChat has it; the result says in doubt),
// any other outcome is the new owner's to decide.
func testSharedLateCompletion(t *testing.T, open SharedOpener) {
	c := NewClock()
	a, b, lapse := open(t, c, nil)
	must[storage.Subscription](t)(a.ApplySubscription(ctx, accept(storage.SourceClient, c.Now())))
	ra := must[storage.ReserveResult](t)(a.Reserve(ctx, ownReq(a, "e1", true)))
	lapse()
	rb := waitTakeover(t, b, ownReq(b, "e1", true))
	if rb.Outcome != storage.Reserved || !rb.Record.InDoubt {
		t.Fatalf("takeover: %+v", rb)
	}
	late := ra.Record
	late.State = storage.StateRetry
	if _, ok, err := a.Complete(ctx, late, storage.RefundCredit, nil); err != nil || ok {
		t.Fatalf("a's late retry applied (%v, %v): the record is b's now", ok, err)
	}
	if n := credits(t, b); n != 0 {
		t.Fatalf("a's late failure refunded the credit b's send holds: %d", n)
	}
	late.State, late.MsgID = storage.StateSent, "555"
	saved, ok, err := a.Complete(ctx, late, storage.KeepCredit, nil)
	if err != nil || !ok || saved.State != storage.StateSent || !saved.InDoubt {
		t.Fatalf("a's late send: applied %v %v %+v", ok, err, saved)
	}
	// b's own outcome then finds it final.
	mine := rb.Record
	mine.State, mine.MsgID = storage.StateSent, "556"
	if _, ok, err := b.Complete(ctx, mine, storage.KeepCredit, nil); err != nil || ok {
		t.Fatalf("b's outcome overwrote the recorded one (%v, %v)", ok, err)
	}
}

// Accepts and sends through two bridges at once: credits are never below
// zero, none is lost, every reserved send is backed by one accept.
func testSharedCredits(t *testing.T, open SharedOpener) {
	c := NewClock()
	a, b, _ := open(t, c, nil)
	const accepts, senders = 60, 90
	var mu sync.Mutex
	reserved := 0
	var wg sync.WaitGroup
	for i := 0; i < accepts; i++ {
		s := []Store{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.ApplySubscription(ctx, accept(storage.SourceClient, c.Now().Add(time.Duration(i)*time.Hour))); err != nil {
				t.Error(err)
			}
		}()
	}
	for i := 0; i < senders; i++ {
		s := []Store{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.Reserve(ctx, ownReq(s, fmt.Sprintf("e%d", i), true))
			if err != nil {
				t.Error(err)
				return
			}
			if r.Outcome == storage.Reserved {
				mu.Lock()
				reserved++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	left := credits(t, a)
	if left < 0 || reserved+left != accepts {
		t.Fatalf("%d reserved + %d left != %d accepts", reserved, left, accepts)
	}
}

// Either bridge relays what either queued, once.
func testSharedOutbox(t *testing.T, open SharedOpener) {
	a, b, _ := open(t, NewClock(), nil)
	for i := 0; i < 10; i++ {
		s := []Store{a, b}[i%2]
		check(t, s.Enqueue(ctx, storage.OutboxMessage{Subject: fmt.Sprint("s.", i), MsgID: fmt.Sprint(i)}))
	}
	seen := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < 10 && time.Now().Before(deadline) {
		for _, s := range []Store{a, b} {
			got := must[[]storage.OutboxEntry](t)(s.NextOutbox(ctx, 3, 100*time.Millisecond))
			for _, e := range got {
				seen[e.MsgID]++
			}
			s.Published(ctx, got, nil)
		}
	}
	for i := 0; i < 10; i++ {
		if n := seen[fmt.Sprint(i)]; n != 1 {
			t.Fatalf("entry %d relayed %d times (all: %v)", i, n, seen)
		}
	}
}
