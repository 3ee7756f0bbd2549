package storage_test

import (
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/storage"
)

var t0 = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

func sendRec(state string, mods ...func(*storage.SendRecord)) storage.SendRecord {
	r := storage.SendRecord{Key: "k", EventID: "e", Rule: "r", App: "main", TemplateID: "T", UserID: "u", OpenID: "o", State: state}
	for _, m := range mods {
		m(&r)
	}
	return r
}

func accepted(credits int, kind string) storage.Subscription {
	return storage.Subscription{App: "main", OpenID: "o", TemplateID: "T", Status: storage.StatusAccept, Kind: kind, Credits: credits}
}

func TestDecideReserve(t *testing.T) {
	req := storage.ReserveRequest{Record: sendRec(""), Owner: "me", CheckCredit: true, Kind: storage.KindOneTime, ResendInDoubt: true}
	noResend := req
	noResend.ResendInDoubt = false
	dedupe := req
	dedupe.DedupeKey, dedupe.DedupeWindow = "d", 10*time.Minute
	capped := req
	capped.CapKey, capped.CapMax, capped.CapPer = "c", 2, time.Hour
	longTerm := req
	longTerm.Kind = storage.KindLongTerm
	unchecked := req
	unchecked.CheckCredit = false
	otherAlive := func(owner string) bool { return owner == "other" }

	cases := []struct {
		name  string
		st    storage.ReserveState
		req   storage.ReserveRequest
		alive storage.Alive
		// want
		outcome   storage.Reservation
		reason    string
		write     bool
		credits   int // of the saved ledger entry; -1: none saved
		inDoubt   bool
		attempts  int
		markDedup bool
	}{
		{name: "new send with a credit spends it", st: storage.ReserveState{Sub: accepted(2, storage.KindOneTime)}, req: req,
			outcome: storage.Reserved, write: true, credits: 1, attempts: 1},
		{name: "no credit", st: storage.ReserveState{Sub: accepted(0, storage.KindOneTime)}, req: req,
			outcome: storage.NoCredit, reason: "not_subscribed", credits: -1},
		{name: "never subscribed", req: req, outcome: storage.NoCredit, reason: "not_subscribed", credits: -1},
		{name: "rejected", st: storage.ReserveState{Sub: storage.Subscription{Status: storage.StatusReject}}, req: req,
			outcome: storage.NoCredit, reason: "rejected", credits: -1},
		{name: "long-term: no count spent", st: storage.ReserveState{Sub: accepted(0, storage.KindLongTerm)}, req: longTerm,
			outcome: storage.Reserved, write: true, credits: -1, attempts: 1},
		{name: "ledger off: nothing checked", req: unchecked, outcome: storage.Reserved, write: true, credits: -1, attempts: 1},
		{name: "an outcome stands", st: storage.ReserveState{Found: true, Record: sendRec(storage.StateSent)}, req: req,
			outcome: storage.AlreadyFinal, credits: -1},
		{name: "pending of a dead attempt, at least once: resent in doubt, same credit",
			st:  storage.ReserveState{Found: true, Record: sendRec(storage.StatePending, func(r *storage.SendRecord) { r.Owner, r.Attempts, r.CreditTaken = "gone", 1, true })},
			req: req, alive: otherAlive, outcome: storage.Reserved, write: true, credits: -1, inDoubt: true, attempts: 2},
		{name: "pending of a dead attempt, at most once: in doubt, nothing changes",
			st:  storage.ReserveState{Found: true, Record: sendRec(storage.StatePending, func(r *storage.SendRecord) { r.Owner = "gone" })},
			req: noResend, alive: otherAlive, outcome: storage.InDoubt, credits: -1},
		{name: "pending of a live bridge: busy, whatever the delivery",
			st:  storage.ReserveState{Found: true, Record: sendRec(storage.StatePending, func(r *storage.SendRecord) { r.Owner = "other" })},
			req: req, alive: otherAlive, outcome: storage.Busy, credits: -1},
		{name: "my own pending record is an attempt that never finished",
			st:  storage.ReserveState{Found: true, Record: sendRec(storage.StatePending, func(r *storage.SendRecord) { r.Owner, r.Attempts = "me", 1 })},
			req: req, alive: func(string) bool { return true }, outcome: storage.Reserved, write: true, credits: -1, inDoubt: true, attempts: 2},
		{name: "a retry takes a credit again (the failure gave it back)",
			st:  storage.ReserveState{Found: true, Record: sendRec(storage.StateRetry, func(r *storage.SendRecord) { r.Attempts = 1 }), Sub: accepted(1, storage.KindOneTime)},
			req: req, outcome: storage.Reserved, write: true, credits: 0, attempts: 2},
		{name: "a retry that kept its credit takes none",
			st:  storage.ReserveState{Found: true, Record: sendRec(storage.StateRetry, func(r *storage.SendRecord) { r.Attempts, r.CreditTaken = 1, true }), Sub: accepted(0, storage.KindOneTime)},
			req: req, outcome: storage.Reserved, write: true, credits: -1, attempts: 2},
		{name: "within the dedupe window", st: storage.ReserveState{Sub: accepted(1, storage.KindOneTime), DedupeAt: t0.Add(-9 * time.Minute)},
			req: dedupe, outcome: storage.Suppressed, reason: "duplicate", credits: -1},
		{name: "after the dedupe window", st: storage.ReserveState{Sub: accepted(1, storage.KindOneTime), DedupeAt: t0.Add(-11 * time.Minute)},
			req: dedupe, outcome: storage.Reserved, write: true, credits: 0, attempts: 1, markDedup: true},
		{name: "cap reached", st: storage.ReserveState{Sub: accepted(1, storage.KindOneTime), CapCount: 2}, req: capped,
			outcome: storage.Suppressed, reason: "rate_capped", credits: -1},
		{name: "cap not reached", st: storage.ReserveState{Sub: accepted(1, storage.KindOneTime), CapCount: 1}, req: capped,
			outcome: storage.Reserved, write: true, credits: 0, attempts: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := storage.DecideReserve(tc.st, tc.req, t0, tc.alive)
			if d.Result.Outcome != tc.outcome || d.Result.Reason != tc.reason || d.Write != tc.write {
				t.Fatalf("outcome %v reason %q write %v; want %v %q %v", d.Result.Outcome, d.Result.Reason, d.Write, tc.outcome, tc.reason, tc.write)
			}
			switch {
			case tc.credits < 0 && d.Sub != nil:
				t.Fatalf("ledger changed: %+v", *d.Sub)
			case tc.credits >= 0 && (d.Sub == nil || d.Sub.Credits != tc.credits || d.Sub.Source != storage.SourceSend):
				t.Fatalf("ledger %+v, want %d credits spent by a send", d.Sub, tc.credits)
			}
			if !tc.write {
				return
			}
			r := d.Result.Record
			if r.State != storage.StatePending || r.Owner != "me" || r.InDoubt != tc.inDoubt || r.Attempts != tc.attempts {
				t.Fatalf("record %+v", r)
			}
			if r.CreditTaken != (d.Sub != nil || tc.st.Record.CreditTaken) {
				t.Fatalf("credit taken %v with ledger change %v", r.CreditTaken, d.Sub != nil)
			}
			if d.MarkDedupe != tc.markDedup || (tc.markDedup && r.DedupeMark != "d") {
				t.Fatalf("dedupe mark %v %q", d.MarkDedupe, r.DedupeMark)
			}
		})
	}
}

func TestDecideComplete(t *testing.T) {
	pending := sendRec(storage.StatePending, func(r *storage.SendRecord) {
		r.Owner, r.Attempts, r.CreditTaken, r.DedupeMark, r.CapMark = "me", 1, true, "d", "c"
	})
	outcome := func(state string, mods ...func(*storage.SendRecord)) storage.SendRecord {
		r := pending
		r.State = state
		for _, m := range mods {
			m(&r)
		}
		return r
	}
	orphan := &storage.Delivery{MsgID: "m1", Status: "delivered"}
	cases := []struct {
		name    string
		cur     storage.SendRecord
		found   bool
		next    storage.SendRecord
		effect  storage.CreditEffect
		sub     storage.Subscription
		orphan  *storage.Delivery
		applied bool
		credits int // -1: ledger unchanged
		release bool
		state   string
		results int
	}{
		{name: "sent keeps the credit and the marks", cur: pending, found: true, next: outcome(storage.StateSent), effect: storage.KeepCredit,
			applied: true, credits: -1, state: storage.StateSent, results: 1},
		{name: "a refused send gives the credit back and frees the marks", cur: pending, found: true, next: outcome(storage.StateFailed),
			effect: storage.RefundCredit, sub: accepted(0, storage.KindOneTime), applied: true, credits: 1, release: true, state: storage.StateFailed, results: 1},
		{name: "no refund after a reject ended the subscription", cur: pending, found: true, next: outcome(storage.StateRetry),
			effect: storage.RefundCredit, sub: storage.Subscription{Status: storage.StatusReject, Kind: storage.KindOneTime},
			applied: true, credits: -1, release: true, state: storage.StateRetry, results: 1},
		{name: "43101 zeroes the ledger", cur: pending, found: true, next: outcome(storage.StateFailed), effect: storage.ZeroCredits,
			sub: accepted(3, storage.KindOneTime), applied: true, credits: 0, release: true, state: storage.StateFailed, results: 1},
		{name: "an outcome is never overwritten", cur: outcome(storage.StateSent), found: true, next: outcome(storage.StateFailed),
			effect: storage.RefundCredit, credits: -1, state: storage.StateSent},
		{name: "a late failure after a takeover is the other attempt's", cur: outcome(storage.StatePending, func(r *storage.SendRecord) { r.Owner = "other" }),
			found: true, next: outcome(storage.StateRetry), effect: storage.RefundCredit, sub: accepted(0, storage.KindOneTime), credits: -1, state: storage.StatePending},
		{name: "a late send after a takeover stands, in doubt", cur: outcome(storage.StatePending, func(r *storage.SendRecord) { r.Owner, r.InDoubt = "other", true }),
			found: true, next: outcome(storage.StateSent), applied: true, credits: -1, state: storage.StateSent, results: 1},
		{name: "a skip never reserved is created", next: sendRec(storage.StateSkipped), applied: true, credits: -1, state: storage.StateSkipped, results: 1},
		{name: "a delivery report that came first is applied", cur: pending, found: true,
			next: outcome(storage.StateSent, func(r *storage.SendRecord) { r.MsgID = "m1" }), orphan: orphan,
			applied: true, credits: -1, state: storage.StateSent, results: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := storage.DecideComplete(tc.cur, tc.found, tc.next, tc.effect, tc.sub, tc.orphan, t0)
			if d.Applied != tc.applied || d.Record.State != tc.state || len(d.Announce) != tc.results {
				t.Fatalf("applied %v state %s results %d; want %v %s %d", d.Applied, d.Record.State, len(d.Announce), tc.applied, tc.state, tc.results)
			}
			switch {
			case tc.credits < 0 && d.Sub != nil:
				t.Fatalf("ledger changed: %+v", *d.Sub)
			case tc.credits >= 0 && (d.Sub == nil || d.Sub.Credits != tc.credits):
				t.Fatalf("ledger %+v, want %d credits", d.Sub, tc.credits)
			}
			if (d.ReleaseDedupe != "") != tc.release || (d.ReleaseCap != "") != tc.release {
				t.Fatalf("release %q %q, want %v", d.ReleaseDedupe, d.ReleaseCap, tc.release)
			}
			if !d.Applied {
				return
			}
			if storage.Final(d.Record.State) && d.Record.Owner != "" {
				t.Fatalf("an outcome keeps its owner: %+v", d.Record)
			}
			if tc.effect == storage.RefundCredit && d.Record.CreditTaken {
				t.Fatalf("refunded but still holds the credit: %+v", d.Record)
			}
			if tc.orphan != nil && (!d.TookOrphan || d.Record.Delivery != "delivered") {
				t.Fatalf("orphan not applied: %+v", d.Record)
			}
		})
	}
}

func TestDecideLedgerEffects(t *testing.T) {
	if s, ok := storage.ZeroOut(accepted(0, storage.KindOneTime), t0); ok {
		t.Fatalf("nothing to zero, yet changed: %+v", s)
	}
	if s, ok := storage.ZeroOut(accepted(0, storage.KindLongTerm), t0); !ok || s.Status != storage.StatusReject {
		t.Fatalf("43101 on a long-term template: %+v", s)
	}
	if _, ok := storage.RefundTo(accepted(0, storage.KindLongTerm), t0); ok {
		t.Fatal("refunded a template without a count")
	}
}

func TestDecideBindAndDefer(t *testing.T) {
	b := storage.Binding{App: "main", UserID: "u2", OpenID: "o1"}
	d := storage.DecideBind(b, storage.Binding{OpenID: "o-old"}, true, "u1", storage.Binding{OpenID: "o1", UnionID: "un"})
	if d.Moved == nil || d.Moved.UserID != "u1" || d.Moved.App != "main" || d.DropOpenID != "o-old" {
		t.Fatalf("bind moving an openid: %+v %+v", d, d.Moved)
	}
	if d := storage.DecideBind(b, storage.Binding{OpenID: "o1"}, true, "u2", storage.Binding{}); d.Moved != nil || d.DropOpenID != "" {
		t.Fatalf("rebinding the same pair: %+v", d)
	}
	if _, save := storage.DecideDefer(sendRec(storage.StateSent), true, sendRec(""), t0); save {
		t.Fatal("deferred a send with an outcome")
	}
	if _, save := storage.DecideDefer(sendRec(storage.StateDeferred), true, sendRec(""), t0); save {
		t.Fatal("deferred twice")
	}
	r, save := storage.DecideDefer(sendRec(storage.StateRetry, func(r *storage.SendRecord) { r.Attempts, r.Owner = 2, "me" }), true, sendRec(""), t0)
	if !save || r.State != storage.StateDeferred || r.Attempts != 2 || r.Owner != "" {
		t.Fatalf("deferring a retry: %+v", r)
	}
}

func TestApplyChange(t *testing.T) {
	s := storage.Subscription{}
	storage.ApplyChange(&s, storage.SubscriptionChange{Status: storage.StatusAccept, Source: storage.SourcePopup, At: t0}, t0)
	storage.ApplyChange(&s, storage.SubscriptionChange{Status: storage.StatusAccept, Source: storage.SourceClient, At: t0.Add(time.Second)}, t0)
	if s.Credits != 1 {
		t.Fatalf("one accept heard on both channels: %d credits", s.Credits)
	}
	storage.ApplyChange(&s, storage.SubscriptionChange{Status: storage.StatusAccept, Source: storage.SourcePopup, At: t0.Add(time.Minute)}, t0)
	storage.ApplyChange(&s, storage.SubscriptionChange{Status: storage.StatusAccept, Source: storage.SourcePopup, At: t0.Add(2 * time.Minute)}, t0)
	if s.Credits != 3 {
		t.Fatalf("two more popups: %d credits, want 3", s.Credits)
	}
	storage.ApplyChange(&s, storage.SubscriptionChange{Status: storage.StatusReject, Source: storage.SourceChange, At: t0}, t0)
	if s.Credits != 0 || s.Status != storage.StatusReject {
		t.Fatalf("reject: %+v", s)
	}
}

func TestDecideChange(t *testing.T) {
	paired := accepted(1, storage.KindOneTime)
	paired.Unpaired = []storage.AcceptMark{{Source: storage.SourcePopup, At: t0}}
	cases := []struct {
		name    string
		s       storage.Subscription
		ch      storage.SubscriptionChange
		changed bool
		credits int
	}{
		{"a first accept adds a credit", storage.Subscription{},
			storage.SubscriptionChange{Status: storage.StatusAccept, Source: storage.SourceClient, At: t0}, true, 1},
		{"its twin from the other channel changes only the pairing", paired,
			storage.SubscriptionChange{Status: storage.StatusAccept, Source: storage.SourceClient, At: t0.Add(time.Second)}, true, 1},
		{"a reject of a rejected entry changes nothing", storage.Subscription{Status: storage.StatusReject, Kind: storage.KindOneTime},
			storage.SubscriptionChange{Status: storage.StatusReject, Source: storage.SourceChange, At: t0}, false, 0},
		{"an accept of a long-term entry already accepted changes nothing", accepted(0, storage.KindLongTerm),
			storage.SubscriptionChange{Status: storage.StatusAccept, Source: storage.SourceChange}, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.s
			before.Unpaired = append([]storage.AcceptMark(nil), tc.s.Unpaired...)
			s, changed := storage.DecideChange(tc.s, tc.ch, t0)
			if changed != tc.changed || s.Credits != tc.credits {
				t.Fatalf("changed %v credits %d; want %v %d (%+v)", changed, s.Credits, tc.changed, tc.credits, s)
			}
			if len(tc.s.Unpaired) != len(before.Unpaired) {
				t.Fatalf("the caller's entry was modified: %+v", tc.s)
			}
		})
	}
}

// An answer of the user-info API is older than a push applied while it was
// on its way: it may tell a unionid, never undo the push.
func TestDecideFollow(t *testing.T) {
	pushed := storage.Follower{App: "oa", OpenID: "o", Following: false, Source: storage.SourceFollowPush, UpdatedAt: t0.Add(time.Second)}
	withUnion := pushed
	withUnion.UnionID = "un-old"
	info := func(asked *storage.Follower) storage.FollowChange {
		return storage.FollowChange{App: "oa", OpenID: "o", UnionID: "un", Following: true, Source: storage.SourceUserInfo, Asked: asked}
	}
	for _, c := range []struct {
		name      string
		cur       storage.Follower
		found     bool
		ch        storage.FollowChange
		following bool
		unionid   string
		changed   bool
	}{
		{"unknown, answer applies", storage.Follower{}, false, info(&storage.Follower{}), true, "un", true},
		{"unchanged since asked", pushed, true, info(&pushed), true, "un", true},
		{"unknown when asked, a push since", pushed, true, info(&storage.Follower{}), false, "un", true},
		{"known when asked, a push since", pushed, true, info(&storage.Follower{UpdatedAt: t0}), false, "un", true},
		{"a push since, unionid known", withUnion, true, info(&storage.Follower{UpdatedAt: t0}), false, "un-old", false},
		{"no Asked: applies as told", pushed, true, info(nil), true, "un", true},
	} {
		next, changed := storage.DecideFollow(c.cur, c.found, c.ch, t0.Add(time.Minute))
		if next.Following != c.following || next.UnionID != c.unionid || changed != c.changed {
			t.Errorf("%s: following %v unionid %q changed %v, want %v %q %v", c.name, next.Following, next.UnionID, changed,
				c.following, c.unionid, c.changed)
		}
	}
}
