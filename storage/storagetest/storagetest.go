// Package storagetest is the contract every wxbridge state backend passes:
// the bbolt DB and the JetStream KV store. Run it from the backend's tests
// with a Backend: a constructor that opens a fresh, empty store on a clock
// the suite controls and, for a backend several bridges share, one that
// opens two stores on one state.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/storage"
)

// Store is what a backend provides.
type Store interface {
	Bind(ctx context.Context, b storage.Binding) (*storage.Binding, error)
	Unbind(ctx context.Context, app, userID string) (bool, error)
	Binding(ctx context.Context, app, userID string) (storage.Binding, bool, error)
	Bindings(ctx context.Context, userID string) ([]storage.Binding, error)
	UserByOpenID(ctx context.Context, app, openid string) (string, bool, error)

	UpdateRoles(ctx context.Context, userID string, grant, revoke []storage.Role) error
	RoleMembers(ctx context.Context, role, scope string) ([]storage.RoleGrant, error)
	UserRoles(ctx context.Context, userID string) ([]storage.RoleGrant, error)

	ApplySubscription(ctx context.Context, ch storage.SubscriptionChange) (storage.Subscription, error)
	Subscription(ctx context.Context, app, openid, templateID string) (storage.Subscription, bool, error)
	Subscriptions(ctx context.Context, app, openid string) ([]storage.Subscription, error)
	ApplyPush(ctx context.Context, p storage.PushChanges) (storage.PushResult, error)

	Reserve(ctx context.Context, req storage.ReserveRequest) (storage.ReserveResult, error)
	Complete(ctx context.Context, rec storage.SendRecord, effect storage.CreditEffect, build func(storage.SendRecord) []storage.OutboxMessage) (storage.SendRecord, bool, error)
	CompleteEvent(ctx context.Context, rec storage.SendRecord, effect storage.CreditEffect, build func(storage.SendRecord) []storage.OutboxMessage) (storage.SendRecord, bool, error)
	Send(ctx context.Context, key string) (storage.SendRecord, bool, error)
	EventSends(ctx context.Context, eventID string) ([]storage.SendRecord, error)
	MarkEventDone(ctx context.Context, id, typ string, out ...storage.OutboxMessage) error
	EventDone(ctx context.Context, id string) (storage.EventRecord, bool, error)

	Lookup(ctx context.Context, l storage.Lookup) (storage.Found, error)

	SaveFollowers(ctx context.Context, chs ...storage.FollowChange) error
	Follower(ctx context.Context, app, openid string) (storage.Follower, bool, error)
	FollowerByUnionID(ctx context.Context, app, unionid string) (storage.Follower, bool, error)
	BindingsByUnionID(ctx context.Context, unionid string) ([]storage.Binding, error)

	Defer(ctx context.Context, rec storage.SendRecord, due time.Time, payload []byte) (bool, error)
	WaitDue(ctx context.Context, max int, wait time.Duration) ([]storage.Deferred, error)
	Settle(ctx context.Context, d storage.Deferred, next time.Time) error

	Enqueue(ctx context.Context, msgs ...storage.OutboxMessage) error
	NextOutbox(ctx context.Context, max int, wait time.Duration) ([]storage.OutboxEntry, error)
	Published(ctx context.Context, done, failed []storage.OutboxEntry)

	Owner() string
	Lease() error

	LoadToken(ctx context.Context, key string) (string, time.Time, error)
	SaveToken(ctx context.Context, key, token string, expiresAt time.Time) error

	Expire(ctx context.Context, r storage.Retention) (storage.ExpireStats, error)
}

// Clock is a settable clock for the store under test.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts a clock at a fixed instant.
func NewClock() *Clock { return NewClockAt(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)) }

// NewClockAt starts a clock at t.
func NewClockAt(t time.Time) *Clock { return &Clock{t: t} }

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Now is the clock's time; give it to the store as its time source.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Opener opens a fresh store whose clock is c. hook is the ledger hook the
// store must call for every ledger change.
type Opener func(t *testing.T, c *Clock, hook storage.LedgerHook) Store

// SharedOpener opens two stores on one fresh state, as two bridges would.
// lapse makes a's lease lapse as if its bridge had died (a stays usable, as
// a bridge that lost its lease but not its memory would); after it, b must
// see a's pending records as in doubt within a few seconds.
type SharedOpener func(t *testing.T, c *Clock, hook storage.LedgerHook) (a, b Store, lapse func())

// Backend is what a backend gives the suite.
type Backend struct {
	Open Opener
	// Sweeps: old records go when Expire is called (bbolt). A backend whose
	// server expires keys itself tests that on its own.
	Sweeps bool
	// Shared, for a backend several bridges share, runs the cross-store
	// cases.
	Shared SharedOpener
}

const (
	app = "main"
	tpl = "TPL-1"
)

// Run runs the whole contract against a backend.
func Run(t *testing.T, b Backend) {
	open := b.Open
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"Bindings", testBindings},
		{"Roles", testRoles},
		{"LedgerAcceptsAddUp", testLedgerAcceptsAddUp},
		{"LedgerReconcilesTwoChannels", testLedgerReconcile},
		{"LedgerLongTerm", testLedgerLongTerm},
		{"LedgerListsTemplates", testLedgerLists},
		{"LedgerAnnouncesEveryChange", testLedgerAnnounces},
		{"ReserveConsumesOnce", testReserveConsumesOnce},
		{"CompleteEffects", testCompleteEffects},
		{"OutcomeNeverOverwritten", testOutcomeNeverOverwritten},
		{"CompleteEvent", testCompleteEvent},
		{"InDoubt", testInDoubt},
		{"DedupeAndCap", testDedupeAndCap},
		{"PushAppliedOnce", testPushOnce},
		{"DeliveryBeforeItsSend", testDeliveryBeforeSend},
		{"Lookup", testLookup},
		{"Followers", testFollowers},
		{"BindingsByUnionID", testBindingsByUnionID},
		{"RetryMayChangeChannel", testRetryChannel},
		{"FollowerUnionIDClaimed", testFollowerUnionIDClaimed},
		{"FollowerAnswerOlderThanPush", testFollowerAnswerOlderThanPush},
		{"Schedule", testSchedule},
		{"Outbox", testOutbox},
		{"Tokens", testTokens},
		{"ConcurrentCredits", testConcurrentCredits},
	}
	if b.Sweeps {
		tests = append(tests, struct {
			name string
			fn   func(*testing.T, Opener)
		}{"Expire", testExpire})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
	if b.Shared != nil {
		runShared(t, b.Shared)
	}
}

// RunShared runs only the cases of two bridges on one state: for a second,
// costlier setup of a backend (a replicated cluster) that already passed Run.
func RunShared(t *testing.T, open SharedOpener) { runShared(t, open) }

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var ctx = context.Background()

func testBindings(t *testing.T, open Opener) {
	s := open(t, NewClock(), nil)
	if moved := must[*storage.Binding](t)(s.Bind(ctx, storage.Binding{App: app, UserID: "u1", OpenID: "o1", UnionID: "x1"})); moved != nil {
		t.Fatalf("first bind moved %+v", moved)
	}
	b, ok, err := s.Binding(ctx, app, "u1")
	if err != nil || !ok || b.OpenID != "o1" || b.UnionID != "x1" || b.BoundAt.IsZero() {
		t.Fatalf("binding %+v %v %v", b, ok, err)
	}
	// The openid moves to u2: u1 loses it, and the move is reported.
	moved := must[*storage.Binding](t)(s.Bind(ctx, storage.Binding{App: app, UserID: "u2", OpenID: "o1"}))
	if moved == nil || moved.UserID != "u1" {
		t.Fatalf("re-bind: moved %+v", moved)
	}
	if _, ok, _ := s.Binding(ctx, app, "u1"); ok {
		t.Fatal("u1 still bound after its openid moved")
	}
	if u, ok, _ := s.UserByOpenID(ctx, app, "o1"); !ok || u != "u2" {
		t.Fatalf("o1 belongs to %q", u)
	}
	// u2 gets a new openid: the old one no longer points at u2.
	must[*storage.Binding](t)(s.Bind(ctx, storage.Binding{App: app, UserID: "u2", OpenID: "o2"}))
	if _, ok, _ := s.UserByOpenID(ctx, app, "o1"); ok {
		t.Fatal("o1 still points at a user")
	}
	// One user, several apps.
	must[*storage.Binding](t)(s.Bind(ctx, storage.Binding{App: "other", UserID: "u2", OpenID: "p2"}))
	if all := must[[]storage.Binding](t)(s.Bindings(ctx, "u2")); len(all) != 2 {
		t.Fatalf("u2 bindings %+v", all)
	}
	if found := must[bool](t)(s.Unbind(ctx, app, "u2")); !found {
		t.Fatal("unbind found nothing")
	}
	if _, ok, _ := s.UserByOpenID(ctx, app, "o2"); ok {
		t.Fatal("unbound openid still resolves")
	}
	if found := must[bool](t)(s.Unbind(ctx, app, "u2")); found {
		t.Fatal("second unbind found something")
	}
	if _, err := s.Bind(ctx, storage.Binding{App: app, UserID: "u3"}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("bind without openid: %v", err)
	}
}

func testRoles(t *testing.T, open Opener) {
	s := open(t, NewClock(), nil)
	rec := storage.Role{Role: "reconciler", Scope: "buyer:42"}
	check(t, s.UpdateRoles(ctx, "u1", []storage.Role{rec}, nil))
	check(t, s.UpdateRoles(ctx, "u2", []storage.Role{rec, {Role: "admin", Scope: ""}}, nil))
	check(t, s.UpdateRoles(ctx, "u3", []storage.Role{{Role: "reconciler", Scope: "buyer:420"}}, nil))
	members := must[[]storage.RoleGrant](t)(s.RoleMembers(ctx, "reconciler", "buyer:42"))
	if len(members) != 2 || members[0].UserID != "u1" || members[1].UserID != "u2" {
		t.Fatalf("members of buyer:42 (must not include buyer:420): %+v", members)
	}
	check(t, s.UpdateRoles(ctx, "u1", nil, []storage.Role{rec}))
	if members := must[[]storage.RoleGrant](t)(s.RoleMembers(ctx, "reconciler", "buyer:42")); len(members) != 1 {
		t.Fatalf("after revoke: %+v", members)
	}
	if roles := must[[]storage.RoleGrant](t)(s.UserRoles(ctx, "u2")); len(roles) != 2 {
		t.Fatalf("roles of u2: %+v", roles)
	}
}

func accept(src string, at time.Time) storage.SubscriptionChange {
	return storage.SubscriptionChange{App: app, OpenID: "o1", TemplateID: tpl, Status: storage.StatusAccept, Source: src, At: at}
}

func credits(t *testing.T, s Store) int {
	t.Helper()
	sub, _, err := s.Subscription(ctx, app, "o1", tpl)
	if err != nil {
		t.Fatal(err)
	}
	return sub.Credits
}

func testLedgerAcceptsAddUp(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	for i := 0; i < 3; i++ {
		must[storage.Subscription](t)(s.ApplySubscription(ctx, accept(storage.SourceClient, c.Now())))
		c.Advance(time.Second)
	}
	if n := credits(t, s); n != 3 {
		t.Fatalf("three client accepts: %d credits", n)
	}
	reject := accept(storage.SourceChange, c.Now())
	reject.Status = storage.StatusReject
	sub := must[storage.Subscription](t)(s.ApplySubscription(ctx, reject))
	if sub.Credits != 0 || sub.Status != storage.StatusReject {
		t.Fatalf("after reject: %+v", sub)
	}
	if ok, reason := sub.Usable(); ok || reason != "rejected" {
		t.Fatalf("rejected subscription usable=%v reason=%q", ok, reason)
	}
	sub = must[storage.Subscription](t)(s.ApplySubscription(ctx, accept(storage.SourcePopup, c.Now())))
	if sub.Credits != 1 || sub.Status != storage.StatusAccept {
		t.Fatalf("accept after reject: %+v", sub)
	}
}

// Subscriptions lists a person's ledger entries, each naming its template
// (the admin API and the console show them), however long the id.
func testLedgerLists(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	long := strings.Repeat("T", 300)
	for _, id := range []string{tpl, long} {
		ch := accept(storage.SourceClient, c.Now())
		ch.TemplateID = id
		must[storage.Subscription](t)(s.ApplySubscription(ctx, ch))
	}
	other := accept(storage.SourceClient, c.Now())
	other.OpenID = "o2"
	must[storage.Subscription](t)(s.ApplySubscription(ctx, other))
	subs := must[[]storage.Subscription](t)(s.Subscriptions(ctx, app, "o1"))
	var ids []string
	for _, sub := range subs {
		ids = append(ids, sub.TemplateID)
		if sub.App != app || sub.OpenID != "o1" || sub.Credits != 1 {
			t.Errorf("listed %+v", sub)
		}
	}
	slices.Sort(ids)
	if want := []string{tpl, long}; !slices.Equal(ids, want) {
		t.Errorf("o1's ledger lists templates %q, want %q", ids, want)
	}
}

func testLedgerReconcile(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	t0 := c.Now()
	// One accept heard twice: client report, then the popup push 3 s later.
	must[storage.Subscription](t)(s.ApplySubscription(ctx, accept(storage.SourceClient, t0)))
	must[storage.PushResult](t)(s.ApplyPush(ctx, storage.PushChanges{DedupeKey: "p1",
		Subscriptions: []storage.SubscriptionChange{accept(storage.SourcePopup, t0.Add(3*time.Second))}}))
	if n := credits(t, s); n != 1 {
		t.Fatalf("one accept heard on two channels: %d credits, want 1", n)
	}
	// Two real accepts, both heard on both channels, interleaved.
	c.Advance(time.Minute)
	t1 := c.Now()
	must[storage.PushResult](t)(s.ApplyPush(ctx, storage.PushChanges{DedupeKey: "p2",
		Subscriptions: []storage.SubscriptionChange{accept(storage.SourcePopup, t1)}}))
	must[storage.PushResult](t)(s.ApplyPush(ctx, storage.PushChanges{DedupeKey: "p3",
		Subscriptions: []storage.SubscriptionChange{accept(storage.SourcePopup, t1.Add(5*time.Second))}}))
	must[storage.Subscription](t)(s.ApplySubscription(ctx, accept(storage.SourceClient, t1.Add(time.Second))))
	must[storage.Subscription](t)(s.ApplySubscription(ctx, accept(storage.SourceClient, t1.Add(6*time.Second))))
	if n := credits(t, s); n != 3 {
		t.Fatalf("1 + 2 accepts each heard twice: %d credits, want 3", n)
	}
	// A client report long after a popup is a new accept.
	c.Advance(time.Hour)
	must[storage.Subscription](t)(s.ApplySubscription(ctx, accept(storage.SourceClient, c.Now())))
	if n := credits(t, s); n != 4 {
		t.Fatalf("late client report: %d credits, want 4", n)
	}
}

func testLedgerLongTerm(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	ch := accept(storage.SourcePopup, c.Now())
	ch.Kind = storage.KindLongTerm
	sub := must[storage.Subscription](t)(s.ApplySubscription(ctx, ch))
	if ok, _ := sub.Usable(); !ok || sub.Kind != storage.KindLongTerm {
		t.Fatalf("long-term accept: %+v", sub)
	}
	for i := 0; i < 5; i++ {
		res := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq(fmt.Sprintf("e%d", i), "own", true)))
		if res.Outcome != storage.Reserved {
			t.Fatalf("long-term send %d: %+v", i, res)
		}
	}
	if sub, _, _ := s.Subscription(ctx, app, "o1", tpl); sub.Status != storage.StatusAccept || sub.Kind != storage.KindLongTerm {
		t.Fatalf("long-term after sends: %+v", sub)
	}
}

func testLedgerAnnounces(t *testing.T, open Opener) {
	c := NewClock()
	var mu sync.Mutex
	var seen []storage.Subscription
	hook := func(s storage.Subscription) []storage.OutboxMessage {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, s)
		return []storage.OutboxMessage{{Subject: "subs." + s.App, Payload: []byte(fmt.Sprint(s.Credits))}}
	}
	s := open(t, c, hook)
	must[*storage.Binding](t)(s.Bind(ctx, storage.Binding{App: app, UserID: "u1", OpenID: "o1"}))
	must[storage.Subscription](t)(s.ApplySubscription(ctx, accept(storage.SourceClient, c.Now())))
	res := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "own", true)))
	rec := res.Record
	rec.State = storage.StateFailed
	must[storage.SendRecord](t)(first(s.Complete(ctx, rec, storage.RefundCredit, nil)))
	var got []string
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < 3 && time.Now().Before(deadline) {
		for _, m := range must[[]storage.OutboxEntry](t)(s.NextOutbox(ctx, 100, 200*time.Millisecond)) {
			got = append(got, string(m.Payload))
		}
	}
	// accept (1), send consumed (0), refund (1).
	if fmt.Sprint(got) != "[1 0 1]" {
		t.Fatalf("announced credits %v, want [1 0 1]", got)
	}
	if seen[0].UserID != "u1" {
		t.Fatalf("announcement lacks the user: %+v", seen[0])
	}
}

func first[A, B any](a A, _ B, err error) (A, error) { return a, err }

func reserveReq(event, owner string, checkCredit bool) storage.ReserveRequest {
	return storage.ReserveRequest{
		Record: storage.SendRecord{Key: storage.SendKey(event, "rule", "u:u1"), EventID: event, EventType: "t", Rule: "rule",
			App: app, TemplateID: tpl, UserID: "u1", OpenID: "o1"},
		Owner: owner, CheckCredit: checkCredit, ResendInDoubt: true,
	}
}

func testReserveConsumesOnce(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	if res := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "own", true))); res.Outcome != storage.NoCredit || res.Reason != "not_subscribed" {
		t.Fatalf("no ledger entry: %+v", res)
	}
	must[storage.Subscription](t)(s.ApplySubscription(ctx, accept(storage.SourceClient, c.Now())))
	res := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "own", true)))
	if res.Outcome != storage.Reserved || !res.Record.CreditTaken || res.Record.State != storage.StatePending || res.Record.Attempts != 1 {
		t.Fatalf("reserve: %+v", res)
	}
	if n := credits(t, s); n != 0 {
		t.Fatalf("credit not consumed: %d", n)
	}
	// Asking again while it is pending (an attempt that never finished)
	// takes it over in doubt, and consumes nothing more.
	if again := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "own", true))); again.Outcome != storage.Reserved || !again.Record.InDoubt {
		t.Fatalf("second reserve: %+v", again)
	}
	if n := credits(t, s); n != 0 {
		t.Fatalf("credits after taking over: %d", n)
	}
	// Another event has no credit left.
	if other := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e2", "own", true))); other.Outcome != storage.NoCredit {
		t.Fatalf("second event with no credit: %+v", other)
	}
	rec := res.Record
	rec.State, rec.MsgID = storage.StateSent, "1864323726461255681"
	must[storage.SendRecord](t)(first(s.Complete(ctx, rec, storage.KeepCredit, nil)))
	if done := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "own", true))); done.Outcome != storage.AlreadyFinal || done.Record.MsgID != rec.MsgID {
		t.Fatalf("reserve after sent: %+v", done)
	}
	if n := credits(t, s); n != 0 {
		t.Fatalf("credits after one send: %d", n)
	}
}

func testCompleteEffects(t *testing.T, open Opener) {
	cases := []struct {
		name        string
		state       string
		effect      storage.CreditEffect
		wantCredits int
	}{
		{"sent keeps the credit spent", storage.StateSent, storage.KeepCredit, 1},
		{"failure WeChat did not count refunds", storage.StateFailed, storage.RefundCredit, 2},
		{"transient failure refunds until the retry", storage.StateRetry, storage.RefundCredit, 2},
		{"43101 zeroes", storage.StateFailed, storage.ZeroCredits, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := NewClock()
			s := open(t, c, nil)
			must[storage.Subscription](t)(s.ApplySubscription(ctx, accept(storage.SourceClient, c.Now())))
			c.Advance(time.Hour) // a second, separate accept
			must[storage.Subscription](t)(s.ApplySubscription(ctx, accept(storage.SourceClient, c.Now())))
			res := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "own", true)))
			rec := res.Record
			rec.State = tc.state
			var built []storage.SendRecord
			saved, applied, err := s.Complete(ctx, rec, tc.effect, func(r storage.SendRecord) []storage.OutboxMessage {
				built = append(built, r)
				return []storage.OutboxMessage{{Subject: "results.t", Payload: []byte(r.State)}}
			})
			check(t, err)
			if !applied || saved.State != tc.state {
				t.Fatalf("complete: applied=%v %+v", applied, saved)
			}
			if n := credits(t, s); n != tc.wantCredits {
				t.Fatalf("credits %d, want %d", n, tc.wantCredits)
			}
			if len(built) == 0 || built[len(built)-1].State != tc.state {
				t.Fatalf("announcement built from %+v", built)
			}
			if tc.state == storage.StateRetry {
				// The retry takes a credit again, and only one.
				again := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "own", true)))
				if again.Outcome != storage.Reserved || again.Record.Attempts != 2 {
					t.Fatalf("retry reserve: %+v", again)
				}
				if n := credits(t, s); n != 1 {
					t.Fatalf("credits after retry reserve %d, want 1", n)
				}
			}
		})
	}
}

func testOutcomeNeverOverwritten(t *testing.T, open Opener) {
	s := open(t, NewClock(), nil)
	res := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "own", false)))
	rec := res.Record
	rec.State, rec.MsgID = storage.StateSent, "42"
	must[storage.SendRecord](t)(first(s.Complete(ctx, rec, storage.KeepCredit, nil)))
	rec.State, rec.Reason = storage.StateSkipped, "not_bound"
	called := false
	saved, applied, err := s.Complete(ctx, rec, storage.KeepCredit, func(storage.SendRecord) []storage.OutboxMessage {
		called = true
		return nil
	})
	check(t, err)
	if applied || called || saved.State != storage.StateSent || saved.MsgID != "42" {
		t.Fatalf("a final outcome was overwritten: applied=%v called=%v %+v", applied, called, saved)
	}
}

// The last outcome of an event can mark the event done in the same
// transaction, but only a final one.
func testCompleteEvent(t *testing.T, open Opener) {
	s := open(t, NewClock(), nil)
	rec := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "own", false))).Record
	rec.State = storage.StateRetry
	must[storage.SendRecord](t)(first(s.CompleteEvent(ctx, rec, storage.RefundCredit, nil)))
	if _, done, _ := s.EventDone(ctx, "e1"); done {
		t.Fatal("a retry marked its event done")
	}
	rec = must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "own", false))).Record
	rec.State = storage.StateSent
	must[storage.SendRecord](t)(first(s.CompleteEvent(ctx, rec, storage.KeepCredit, nil)))
	if ev, done, _ := s.EventDone(ctx, "e1"); !done || ev.Type != "t" {
		t.Fatalf("event after its last outcome: %+v %v", ev, done)
	}
}

func testInDoubt(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	must[storage.Subscription](t)(s.ApplySubscription(ctx, accept(storage.SourceClient, c.Now())))
	must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "dead-process", true)))
	// A new process, at_most_once: told, nothing changed.
	req := reserveReq("e1", "new-process", true)
	req.ResendInDoubt = false
	res := must[storage.ReserveResult](t)(s.Reserve(ctx, req))
	if res.Outcome != storage.InDoubt || res.Record.Owner != "dead-process" {
		t.Fatalf("at_most_once in doubt: %+v", res)
	}
	// at_least_once: taken over, marked in doubt, and the credit the dead
	// process took pays for it (no second credit).
	res = must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "new-process", true)))
	if res.Outcome != storage.Reserved || !res.Record.InDoubt || res.Record.Owner != "new-process" || res.Record.Attempts != 2 {
		t.Fatalf("at_least_once takeover: %+v", res)
	}
	if n := credits(t, s); n != 0 {
		t.Fatalf("credits %d after takeover", n)
	}
	rec := res.Record
	rec.State = storage.StateSent
	saved := must[storage.SendRecord](t)(first(s.Complete(ctx, rec, storage.KeepCredit, nil)))
	if !saved.InDoubt {
		t.Fatal("in_doubt lost at completion")
	}
}

func testDedupeAndCap(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	send := func(event string) storage.ReserveResult {
		t.Helper()
		req := reserveReq(event, "own", false)
		req.DedupeKey, req.DedupeWindow = "rule\x00order-7\x00u1", 10*time.Minute
		res := must[storage.ReserveResult](t)(s.Reserve(ctx, req))
		return res
	}
	r1 := send("e1")
	if r1.Outcome != storage.Reserved {
		t.Fatalf("first: %+v", r1)
	}
	c.Advance(time.Minute)
	if r := send("e2"); r.Outcome != storage.Suppressed || r.Reason != "duplicate" {
		t.Fatalf("same order within the window: %+v", r)
	}
	// The first send fails: the slot is free again.
	rec := r1.Record
	rec.State = storage.StateFailed
	must[storage.SendRecord](t)(first(s.Complete(ctx, rec, storage.KeepCredit, nil)))
	if r := send("e3"); r.Outcome != storage.Reserved {
		t.Fatalf("after the first failed: %+v", r)
	}
	c.Advance(11 * time.Minute)
	if r := send("e4"); r.Outcome != storage.Reserved {
		t.Fatalf("after the window: %+v", r)
	}

	capped := func(event string) storage.ReserveResult {
		t.Helper()
		req := reserveReq(event, "own", false)
		req.CapKey, req.CapMax, req.CapPer = "rule\x00u1", 2, time.Hour
		return must[storage.ReserveResult](t)(s.Reserve(ctx, req))
	}
	if capped("c1").Outcome != storage.Reserved || capped("c2").Outcome != storage.Reserved {
		t.Fatal("first two under the cap refused")
	}
	if r := capped("c3"); r.Outcome != storage.Suppressed || r.Reason != "rate_capped" {
		t.Fatalf("third within the hour: %+v", r)
	}
	c.Advance(61 * time.Minute)
	if r := capped("c4"); r.Outcome != storage.Reserved {
		t.Fatalf("after the hour: %+v", r)
	}
}

func testPushOnce(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	must[*storage.Binding](t)(s.Bind(ctx, storage.Binding{App: app, UserID: "u1", OpenID: "o1"}))
	res := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "own", false)))
	rec := res.Record
	rec.State, rec.MsgID = storage.StateSent, "1864323726461255681"
	must[storage.SendRecord](t)(first(s.Complete(ctx, rec, storage.KeepCredit, nil)))

	push := storage.PushChanges{
		DedupeKey:     "o1|1700000000|subscribe_msg_popup_event",
		Subscriptions: []storage.SubscriptionChange{accept(storage.SourcePopup, c.Now())},
	}
	if r := must[storage.PushResult](t)(s.ApplyPush(ctx, push)); r.Duplicate || len(r.Subscriptions) != 1 {
		t.Fatalf("first push: %+v", r)
	}
	if r := must[storage.PushResult](t)(s.ApplyPush(ctx, push)); !r.Duplicate {
		t.Fatalf("retry of the push applied again: %+v", r)
	}
	if n := credits(t, s); n != 1 {
		t.Fatalf("a push retried by WeChat counted %d credits", n)
	}
	announced := 0
	sent := storage.PushChanges{DedupeKey: "o1|1700000001|sent", Deliveries: []storage.Delivery{
		{MsgID: "1864323726461255681", Status: "delivered"}, {MsgID: "999", Status: "delivered"}},
		Announce: func(storage.SendRecord) []storage.OutboxMessage { announced++; return nil }}
	r := must[storage.PushResult](t)(s.ApplyPush(ctx, sent))
	if len(r.Deliveries) != 1 || r.Deliveries[0].Delivery != "delivered" || len(r.UnknownMsgIDs) != 1 || announced != 1 {
		t.Fatalf("delivery push: %+v (announced %d)", r, announced)
	}
	if got, _, _ := s.Send(ctx, rec.Key); got.Delivery != "delivered" || got.State != storage.StateSent {
		t.Fatalf("record after delivery: %+v", got)
	}
}

// WeChat's delivery report can arrive before the bridge has recorded the
// send it reports on (the push races the send's commit). It is kept and
// applied when the send is recorded, not lost.
func testDeliveryBeforeSend(t *testing.T, open Opener) {
	s := open(t, NewClock(), nil)
	res := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("e1", "own", false)))
	r := must[storage.PushResult](t)(s.ApplyPush(ctx, storage.PushChanges{DedupeKey: "sent-1",
		Deliveries: []storage.Delivery{{MsgID: "777", Status: "delivered"}}}))
	if len(r.UnknownMsgIDs) != 1 {
		t.Fatalf("early report: %+v", r)
	}
	rec := res.Record
	rec.State, rec.MsgID = storage.StateSent, "777"
	var built []string
	saved, _, err := s.Complete(ctx, rec, storage.KeepCredit, func(r storage.SendRecord) []storage.OutboxMessage {
		built = append(built, r.State+"/"+r.Delivery)
		return nil
	})
	check(t, err)
	if saved.Delivery != "delivered" || fmt.Sprint(built) != "[sent/ sent/delivered]" {
		t.Fatalf("record %+v, announcements %v", saved, built)
	}
}

// The schedule runs on real time: a backend may leave it to its server's
// clock. The store's clock is moved along so that one keeping its own time
// agrees.
func testSchedule(t *testing.T, open Opener) {
	c := NewClockAt(time.Now())
	s := open(t, c, nil)
	rec := reserveReq("e1", "", false).Record
	due := time.Now().Add(1500 * time.Millisecond)
	if ok := must[bool](t)(s.Defer(ctx, rec, due, []byte(`{"w":1}`))); !ok {
		t.Fatal("defer refused")
	}
	if again := must[bool](t)(s.Defer(ctx, rec, due, []byte(`{"w":2}`))); again {
		t.Fatal("deferred twice")
	}
	if got, _, _ := s.Send(ctx, rec.Key); got.State != storage.StateDeferred {
		t.Fatalf("deferred record: %+v", got)
	}
	if d := must[[]storage.Deferred](t)(s.WaitDue(ctx, 10, 200*time.Millisecond)); len(d) != 0 {
		t.Fatalf("due before its time: %+v", d)
	}
	waitDue := func() storage.Deferred {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			c.Set(time.Now())
			if d := must[[]storage.Deferred](t)(s.WaitDue(ctx, 10, 100*time.Millisecond)); len(d) > 0 {
				if len(d) != 1 || d[0].Key != rec.Key || string(d[0].Payload) != `{"w":1}` {
					t.Fatalf("due: %+v", d)
				}
				return d[0]
			}
		}
		t.Fatal("the deferred send never came due")
		return storage.Deferred{}
	}
	d := waitDue()
	// Moved on: not due again until its new time, then due again.
	next := time.Now().Add(time.Second)
	check(t, s.Settle(ctx, d, next))
	c.Set(time.Now())
	if d2 := must[[]storage.Deferred](t)(s.WaitDue(ctx, 10, 100*time.Millisecond)); len(d2) != 0 {
		t.Fatalf("moved entry due at once: %+v", d2)
	}
	d = waitDue()
	check(t, s.Settle(ctx, d, time.Time{}))
	time.Sleep(1200 * time.Millisecond)
	c.Set(time.Now().Add(time.Hour))
	if d3 := must[[]storage.Deferred](t)(s.WaitDue(ctx, 10, 500*time.Millisecond)); len(d3) != 0 {
		t.Fatalf("settled entry still scheduled: %+v", d3)
	}
}

// The relay gets every queued message once it is published, again when
// publishing failed, and never after it was published.
func testOutbox(t *testing.T, open Opener) {
	s := open(t, NewClock(), nil)
	check(t, s.MarkEventDone(ctx, "e1", "t", storage.OutboxMessage{Subject: "a", MsgID: "1", Payload: []byte("x")},
		storage.OutboxMessage{Subject: "b", Payload: []byte("y"), Header: map[string]string{"H": "v"}}))
	check(t, s.Enqueue(ctx, storage.OutboxMessage{Subject: "c", MsgID: "3"}))
	next := func(want ...string) []storage.OutboxEntry {
		t.Helper()
		var got []storage.OutboxEntry
		deadline := time.Now().Add(30 * time.Second)
		for len(got) < len(want) && time.Now().Before(deadline) {
			got = append(got, must[[]storage.OutboxEntry](t)(s.NextOutbox(ctx, 10, 200*time.Millisecond))...)
		}
		var subjects []string
		for _, e := range got {
			subjects = append(subjects, e.Subject)
		}
		if fmt.Sprint(subjects) != fmt.Sprint(want) {
			t.Fatalf("outbox handed out %v, want %v", subjects, want)
		}
		return got
	}
	all := next("a", "b", "c")
	if all[0].MsgID != "1" || string(all[1].Payload) != "y" || all[1].Header["H"] != "v" {
		t.Fatalf("entries %+v", all)
	}
	s.Published(ctx, []storage.OutboxEntry{all[0], all[2]}, []storage.OutboxEntry{all[1]})
	b := next("b")
	s.Published(ctx, b, nil)
	if more := must[[]storage.OutboxEntry](t)(s.NextOutbox(ctx, 10, 500*time.Millisecond)); len(more) != 0 {
		t.Fatalf("published entries handed out again: %+v", more)
	}
	if _, done, _ := s.EventDone(ctx, "e1"); !done {
		t.Fatal("event not done")
	}
}

// Lookup reads what a send starts from in one go.
func testLookup(t *testing.T, open Opener) {
	s := open(t, NewClock(), nil)
	req := reserveReq("e1", "own", false)
	l := storage.Lookup{EventKey: "e1", SendKey: req.Record.Key, App: app, UserID: "u1", TemplateID: tpl}
	f := must[storage.Found](t)(s.Lookup(ctx, l))
	if f.EventDone || f.HasRecord || f.Bound {
		t.Fatalf("empty state: %+v", f)
	}
	must[*storage.Binding](t)(s.Bind(ctx, storage.Binding{App: app, UserID: "u1", OpenID: "o1"}))
	res := must[storage.ReserveResult](t)(s.Reserve(ctx, req))
	f = must[storage.Found](t)(s.Lookup(ctx, l))
	if !f.Bound || f.Binding.OpenID != "o1" || !f.HasRecord || f.Record.State != storage.StatePending || f.EventDone {
		t.Fatalf("after bind and reserve: %+v", f)
	}
	rec := res.Record
	rec.State = storage.StateSent
	must[storage.SendRecord](t)(first(s.CompleteEvent(ctx, rec, storage.KeepCredit, nil)))
	f = must[storage.Found](t)(s.Lookup(ctx, l))
	if !f.EventDone || f.Record.State != storage.StateSent {
		t.Fatalf("after the outcome: %+v", f)
	}
	// A reservation handed the lookup's snapshot decides the same way.
	req2 := reserveReq("e2", "own", false)
	f2 := must[storage.Found](t)(s.Lookup(ctx, storage.Lookup{SendKey: req2.Record.Key, App: app, UserID: "u1", TemplateID: tpl}))
	req2.Snapshot = f2.Snapshot
	if r := must[storage.ReserveResult](t)(s.Reserve(ctx, req2)); r.Outcome != storage.Reserved {
		t.Fatalf("reserve with a snapshot: %+v", r)
	}
	// A stale snapshot never makes a wrong decision: the outcome e2 now has
	// stands.
	if r := must[storage.ReserveResult](t)(s.Reserve(ctx, req2)); r.Outcome != storage.Reserved || !r.Record.InDoubt {
		t.Fatalf("reserve again with the old snapshot: %+v", r)
	}
}

func testTokens(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	if tok, _, err := s.LoadToken(ctx, "wx1/stable"); err != nil || tok != "" {
		t.Fatalf("empty store token %q %v", tok, err)
	}
	exp := c.Now().Add(2 * time.Hour)
	check(t, s.SaveToken(ctx, "wx1/stable", "T1", exp))
	tok, got, err := s.LoadToken(ctx, "wx1/stable")
	if err != nil || tok != "T1" || !got.Equal(exp) {
		t.Fatalf("token %q %v %v", tok, got, err)
	}
}

func testExpire(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	old := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("old", "own", false))).Record
	old.State, old.MsgID = storage.StateSent, "111"
	must[storage.SendRecord](t)(first(s.Complete(ctx, old, storage.KeepCredit, nil)))
	check(t, s.MarkEventDone(ctx, "old", "t"))
	stuck := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("stuck", "own", false))).Record
	must[storage.PushResult](t)(s.ApplyPush(ctx, storage.PushChanges{DedupeKey: "push-1"}))
	c.Advance(40 * 24 * time.Hour)
	fresh := must[storage.ReserveResult](t)(s.Reserve(ctx, reserveReq("fresh", "own", false))).Record

	st := must[storage.ExpireStats](t)(s.Expire(ctx, storage.Retention{Sends: 30 * 24 * time.Hour, Pushes: 24 * time.Hour}))
	if st.Sends != 1 || st.Pushes != 1 {
		t.Fatalf("expired %+v, want one send and one push key", st)
	}
	if _, ok, _ := s.Send(ctx, old.Key); ok {
		t.Fatal("old final record kept")
	}
	if _, done, _ := s.EventDone(ctx, "old"); done {
		t.Fatal("old event record kept")
	}
	if _, ok, _ := s.Send(ctx, stuck.Key); !ok {
		t.Fatal("an unfinished (pending) record expired")
	}
	if _, ok, _ := s.Send(ctx, fresh.Key); !ok {
		t.Fatal("a fresh record expired")
	}
	if r := must[storage.PushResult](t)(s.ApplyPush(ctx, storage.PushChanges{DedupeKey: "push-1"})); r.Duplicate {
		t.Fatal("expired push key still dedupes")
	}
}

// Many goroutines adding credits (accepts) and spending them (sends) on one
// user and template: credits never go below zero, no accept is lost, and
// every send that got a credit is backed by exactly one accept.
func testConcurrentCredits(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	const accepts, senders = 200, 300
	var wg sync.Mutex
	reserved := 0
	var group sync.WaitGroup
	for i := 0; i < accepts; i++ {
		group.Add(1)
		go func() {
			defer group.Done()
			// Each accept comes from the client channel at its own time, so
			// none pairs with another.
			ch := accept(storage.SourceClient, c.Now().Add(time.Duration(i)*time.Hour))
			if _, err := s.ApplySubscription(ctx, ch); err != nil {
				t.Error(err)
			}
		}()
	}
	for i := 0; i < senders; i++ {
		group.Add(1)
		go func() {
			defer group.Done()
			res, err := s.Reserve(ctx, reserveReq(fmt.Sprintf("e%d", i), "own", true))
			if err != nil {
				t.Error(err)
				return
			}
			if res.Outcome == storage.Reserved {
				wg.Lock()
				reserved++
				wg.Unlock()
			}
		}()
	}
	group.Wait()
	left := credits(t, s)
	if left < 0 {
		t.Fatalf("credits went negative: %d", left)
	}
	if reserved+left != accepts {
		t.Fatalf("%d sends reserved + %d credits left != %d accepts", reserved, left, accepts)
	}
}

// An official account's followers: pushes and the user-info API keep them,
// the unionid finds a person's openid in the account, and every change is
// announced like a ledger change.
func testFollowers(t *testing.T, open Opener) {
	c := NewClock()
	var mu sync.Mutex
	var seen []storage.Subscription
	s := open(t, c, func(sub storage.Subscription) []storage.OutboxMessage {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, sub)
		return nil
	})
	const oa = "oa"
	// A follow push knows no unionid; the user-info API tells it.
	r := must[storage.PushResult](t)(s.ApplyPush(ctx, storage.PushChanges{DedupeKey: "f1",
		Follows: []storage.FollowChange{{App: oa, OpenID: "oa-1", Following: true, Source: storage.SourceFollowPush, At: c.Now()}}}))
	if len(r.Follows) != 1 || !r.Follows[0].Following {
		t.Fatalf("follow push: %+v", r)
	}
	if _, ok, _ := s.FollowerByUnionID(ctx, oa, "un-1"); ok {
		t.Fatal("found by a unionid nobody told")
	}
	check(t, s.SaveFollowers(ctx, storage.FollowChange{App: oa, OpenID: "oa-1", UnionID: "un-1", Following: true, Source: storage.SourceUserInfo},
		storage.FollowChange{App: oa, OpenID: "oa-2", UnionID: "un-2", Following: true, Source: storage.SourceUserInfo}))
	f, ok, err := s.FollowerByUnionID(ctx, oa, "un-1")
	if err != nil || !ok || f.OpenID != "oa-1" || !f.Following {
		t.Fatalf("by unionid: %+v %v %v", f, ok, err)
	}
	// An unfollow push keeps the unionid.
	must[storage.PushResult](t)(s.ApplyPush(ctx, storage.PushChanges{DedupeKey: "f2",
		Follows: []storage.FollowChange{{App: oa, OpenID: "oa-1", Following: false, Source: storage.SourceFollowPush, At: c.Now()}}}))
	if f, _, _ := s.FollowerByUnionID(ctx, oa, "un-1"); f.Following || f.UnionID != "un-1" {
		t.Fatalf("after unfollow: %+v", f)
	}
	if again := must[storage.PushResult](t)(s.ApplyPush(ctx, storage.PushChanges{DedupeKey: "f2",
		Follows: []storage.FollowChange{{App: oa, OpenID: "oa-1", Following: true, Source: storage.SourceFollowPush}}})); !again.Duplicate {
		t.Fatal("a retried push applied again")
	}
	if f, _, _ := s.Follower(ctx, oa, "oa-1"); f.Following {
		t.Fatalf("a retried push changed the follower: %+v", f)
	}
	// Saying again what is known changes (and announces) nothing.
	check(t, s.SaveFollowers(ctx, storage.FollowChange{App: oa, OpenID: "oa-2", UnionID: "un-2", Following: true, Source: storage.SourceUserInfo}))
	mu.Lock()
	defer mu.Unlock()
	var got []string
	for _, a := range seen {
		if a.Kind != storage.KindFollow {
			t.Fatalf("announced as %q: %+v", a.Kind, a)
		}
		got = append(got, a.OpenID+"/"+a.Status+"/"+a.UnionID)
	}
	if fmt.Sprint(got) != "[oa-1/following/ oa-1/following/un-1 oa-2/following/un-2 oa-1/unfollowed/un-1]" {
		t.Fatalf("announcements %v", got)
	}
}

// An answer of the user-info API that was on its way while a push
// arrived tells the unionid, not whether the person follows: the store
// compares the follower it holds with the one read before WeChat was asked.
func testFollowerAnswerOlderThanPush(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	const oa = "oa"
	push := func(key string, following bool) {
		t.Helper()
		must[storage.PushResult](t)(s.ApplyPush(ctx, storage.PushChanges{DedupeKey: key,
			Follows: []storage.FollowChange{{App: oa, OpenID: "oa-1", Following: following, Source: storage.SourceFollowPush, At: c.Now()}}}))
	}
	push("f1", true)
	asked, ok, err := s.Follower(ctx, oa, "oa-1")
	if err != nil || !ok {
		t.Fatalf("follower after a push: %v %v", ok, err)
	}
	c.Advance(time.Second)
	push("f2", false) // while WeChat is being asked
	check(t, s.SaveFollowers(ctx,
		storage.FollowChange{App: oa, OpenID: "oa-1", UnionID: "un-1", Following: true, Source: storage.SourceUserInfo, At: c.Now(), Asked: &asked},
		storage.FollowChange{App: oa, OpenID: "oa-2", UnionID: "un-2", Following: true, Source: storage.SourceUserInfo, At: c.Now(), Asked: &storage.Follower{}}))
	if f, _, _ := s.Follower(ctx, oa, "oa-1"); f.Following || f.UnionID != "un-1" {
		t.Fatalf("an answer older than the unfollow: %+v", f)
	}
	if f, ok, _ := s.FollowerByUnionID(ctx, oa, "un-2"); !ok || !f.Following {
		t.Fatalf("a follower nobody knew of: %+v %v", f, ok)
	}
	// Asked again with nothing in between, the answer stands.
	asked, _, _ = s.Follower(ctx, oa, "oa-1")
	c.Advance(time.Second)
	check(t, s.SaveFollowers(ctx, storage.FollowChange{App: oa, OpenID: "oa-1", UnionID: "un-1", Following: true, Source: storage.SourceUserInfo, At: c.Now(), Asked: &asked}))
	if f, _, _ := s.Follower(ctx, oa, "oa-1"); !f.Following {
		t.Fatalf("an answer with nothing newer: %+v", f)
	}
}

// A unionid another openid has claimed stays that one's when the first
// follower moves on to another unionid.
func testFollowerUnionIDClaimed(t *testing.T, open Opener) {
	s := open(t, NewClock(), nil)
	const oa = "oa"
	save := func(openid, unionid string) {
		t.Helper()
		check(t, s.SaveFollowers(ctx, storage.FollowChange{App: oa, OpenID: openid, UnionID: unionid, Following: true, Source: storage.SourceUserInfo}))
	}
	save("oa-1", "un-1")
	save("oa-2", "un-1")
	save("oa-1", "un-9")
	for unionid, openid := range map[string]string{"un-1": "oa-2", "un-9": "oa-1"} {
		if f, ok, err := s.FollowerByUnionID(ctx, oa, unionid); err != nil || !ok || f.OpenID != openid {
			t.Fatalf("%s: %+v %v %v, want %s", unionid, f, ok, err, openid)
		}
	}
}

// One person's accounts are found by their unionid, and only while the
// bindings carry it.
func testBindingsByUnionID(t *testing.T, open Opener) {
	s := open(t, NewClock(), nil)
	must[*storage.Binding](t)(s.Bind(ctx, storage.Binding{App: app, UserID: "u1", OpenID: "o1", UnionID: "un"}))
	must[*storage.Binding](t)(s.Bind(ctx, storage.Binding{App: "other", UserID: "u1", OpenID: "p1", UnionID: "un"}))
	must[*storage.Binding](t)(s.Bind(ctx, storage.Binding{App: app, UserID: "u2", OpenID: "o2", UnionID: "un2"}))
	if bs := must[[]storage.Binding](t)(s.BindingsByUnionID(ctx, "un")); len(bs) != 2 {
		t.Fatalf("by unionid: %+v", bs)
	}
	// The openid moves to u3, who has no unionid: un keeps one binding.
	must[*storage.Binding](t)(s.Bind(ctx, storage.Binding{App: app, UserID: "u3", OpenID: "o1"}))
	if bs := must[[]storage.Binding](t)(s.BindingsByUnionID(ctx, "un")); len(bs) != 1 || bs[0].App != "other" {
		t.Fatalf("after the move: %+v", bs)
	}
	must[bool](t)(s.Unbind(ctx, "other", "u1"))
	if bs := must[[]storage.Binding](t)(s.BindingsByUnionID(ctx, "un")); len(bs) != 0 {
		t.Fatalf("after unbind: %+v", bs)
	}
}

// A send whose last attempt failed cleanly (credit given back, WeChat
// certainly did not take it) may go by another channel; one that may have
// gone out stays on its own.
func testRetryChannel(t *testing.T, open Opener) {
	c := NewClock()
	s := open(t, c, nil)
	must[storage.Subscription](t)(s.ApplySubscription(ctx, accept(storage.SourceClient, c.Now())))
	req := reserveReq("e1", "own", true)
	rec := must[storage.ReserveResult](t)(s.Reserve(ctx, req)).Record
	rec.State = storage.StateRetry
	must[storage.SendRecord](t)(first(s.Complete(ctx, rec, storage.RefundCredit, nil)))
	// With no credit on the other channel, the retry gets none there: the
	// refunded credit belongs to the first channel, and no entry is made up.
	paid := reserveReq("e1", "own", true)
	paid.Record.App, paid.Record.TemplateID, paid.Record.OpenID = "oa", "TPL-OA", "oa-1"
	if r := must[storage.ReserveResult](t)(s.Reserve(ctx, paid)); r.Outcome != storage.NoCredit {
		t.Fatalf("retry by a channel with no credit: %+v", r)
	}
	if _, ok, err := s.Subscription(ctx, "oa", "oa-1", "TPL-OA"); ok || err != nil {
		t.Fatalf("a ledger entry was made for the other channel (%v)", err)
	}
	if n := credits(t, s); n != 1 {
		t.Fatalf("credits %d after a retry by another channel found none", n)
	}
	other := reserveReq("e1", "own", false)
	other.Record.App, other.Record.TemplateID, other.Record.OpenID = "oa", "TPL-OA", "oa-1"
	r := must[storage.ReserveResult](t)(s.Reserve(ctx, other))
	if r.Outcome != storage.Reserved || r.Record.App != "oa" || r.Record.TemplateID != "TPL-OA" || r.Record.OpenID != "oa-1" {
		t.Fatalf("clean retry by another channel: %+v", r)
	}
	if n := credits(t, s); n != 1 {
		t.Fatalf("credits %d: the first channel's credit was given back", n)
	}
	// This attempt's answer was lost: it may have gone out; the next
	// attempt stays on its channel.
	rec = r.Record
	rec.State, rec.InDoubt = storage.StateRetry, true
	must[storage.SendRecord](t)(first(s.Complete(ctx, rec, storage.KeepCredit, nil)))
	if again := must[storage.ReserveResult](t)(s.Reserve(ctx, req)); again.Record.App != "oa" || again.Record.TemplateID != "TPL-OA" {
		t.Fatalf("a send that may have gone out changed channel: %+v", again)
	}
}
