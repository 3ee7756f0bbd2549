package storage

import (
	"slices"
	"time"
)

// The decisions every backend makes the same way: what a reservation, an
// outcome, a deferral, a binding, a push does to the state. They are plain
// functions of the values a backend loaded; the backend loads, calls them
// inside its transaction (bbolt) or before its conditional write (JetStream
// KV), and saves what they return. Nothing here does I/O.

// ReserveState is what a reservation is decided on.
type ReserveState struct {
	// Record is the send record under the request's key, if Found.
	Record SendRecord
	Found  bool
	// Sub is the recipient's ledger entry for the template (zero Status
	// when there is none). Only read when the request checks credits.
	Sub Subscription
	// DedupeAt is when the request's DedupeKey was last reserved (zero:
	// never, or expired).
	DedupeAt time.Time
	// CapCount is how many sends were reserved under CapKey within CapPer.
	CapCount int
}

// ReserveDecision says what a reservation writes. With Write false nothing
// changes.
type ReserveDecision struct {
	Result ReserveResult
	// Write: save Result.Record (Created: it is new).
	Write   bool
	Created bool
	// Sub, when set, is the ledger entry after a credit was spent.
	Sub *Subscription
	// MarkDedupe and MarkCap: record this reservation under the request's
	// dedupe and cap keys, at the decision's time.
	MarkDedupe, MarkCap bool
}

// Alive says whether the owner of a pending record is alive and working on
// it, so that the record is busy rather than in doubt. A backend shared by
// several bridges asks their leases; a backend of one process knows that a
// pending record of another incarnation was left by one that died. The
// caller's own records are never alive: it reserves a key once at a time,
// so finding its own pending record means an attempt that never finished.
type Alive func(owner string) bool

// DecideReserve decides whether a send may go out now.
func DecideReserve(st ReserveState, req ReserveRequest, now time.Time, alive Alive) ReserveDecision {
	now = now.UTC()
	rec := st.Record
	switch {
	case st.Found && Final(rec.State):
		return ReserveDecision{Result: ReserveResult{Outcome: AlreadyFinal, Record: rec}}
	case st.Found && rec.State == StatePending:
		if rec.Owner != req.Owner && alive != nil && alive(rec.Owner) {
			return ReserveDecision{Result: ReserveResult{Outcome: Busy, Record: rec}}
		}
		if !req.ResendInDoubt {
			return ReserveDecision{Result: ReserveResult{Outcome: InDoubt, Record: rec}}
		}
		// The credit the dead attempt took stays taken: it pays for this one.
		rec.InDoubt = true
		rec.Owner = req.Owner
		rec.Attempts++
		rec.UpdatedAt = now
		return ReserveDecision{Result: ReserveResult{Outcome: Reserved, Record: rec}, Write: true}
	case !st.Found:
		rec = req.Record
		rec.CreatedAt = now
	case !rec.InDoubt && !rec.CreditTaken:
		// A retry that holds nothing (its failure gave the credit back, and
		// WeChat certainly did not take it) may go by another channel: the
		// one the request names.
		rec.App, rec.TemplateID, rec.OpenID = req.Record.App, req.Record.TemplateID, req.Record.OpenID
	}
	// A new record, or one whose last attempt failed transiently (or that
	// waited in the schedule): decide on what was read, write only once
	// everything allows the send.
	if req.DedupeKey != "" && DedupeBlocks(st.DedupeAt, req.DedupeWindow, now) {
		return ReserveDecision{Result: ReserveResult{Outcome: Suppressed, Record: rec, Reason: ReasonDuplicate}}
	}
	if req.CapKey != "" && st.CapCount >= req.CapMax {
		return ReserveDecision{Result: ReserveResult{Outcome: Suppressed, Record: rec, Reason: ReasonRateCapped}}
	}
	d := ReserveDecision{Write: true, Created: !st.Found}
	if req.CheckCredit && !rec.CreditTaken {
		s := st.Sub
		s.App, s.OpenID, s.TemplateID = rec.App, rec.OpenID, rec.TemplateID
		if req.Kind != "" {
			s.Kind = req.Kind
		}
		if ok, reason := s.Usable(); !ok {
			return ReserveDecision{Result: ReserveResult{Outcome: NoCredit, Record: rec, Reason: reason}}
		}
		if s.Kind != KindLongTerm {
			s.Credits--
			s.Source, s.UpdatedAt = SourceSend, now
			d.Sub = &s
			rec.CreditTaken = true
		}
	}
	if req.DedupeKey != "" {
		d.MarkDedupe, rec.DedupeMark = true, req.DedupeKey
	}
	if req.CapKey != "" {
		d.MarkCap = true
	}
	rec.State = StatePending
	rec.Owner = req.Owner
	rec.Attempts++
	rec.UpdatedAt = now
	d.Result = ReserveResult{Outcome: Reserved, Record: rec}
	return d
}

// CompleteDecision says what recording an outcome writes.
type CompleteDecision struct {
	// Applied is false when the record already had an outcome, or was
	// taken over by another attempt: nothing is written but EventDone.
	Applied bool
	// Record is what to save, Created when the record is new.
	Record  SendRecord
	Created bool
	// Sub, when set, is the ledger entry after the credit effect.
	Sub *Subscription
	// ReleaseDedupe and ReleaseCap are policy marks to remove: nothing went
	// out, so a later send may take the slots.
	ReleaseDedupe, ReleaseCap string
	// TookOrphan: the delivery report that came before this record was
	// applied (the caller passed it) and must be forgotten.
	TookOrphan bool
	// Announce lists the records whose results to queue: the outcome and,
	// with an orphan report, its delivery.
	Announce []SendRecord
}

// NeedsLedger reports whether completing next with effect changes the
// ledger, so the backend must load the entry first.
func NeedsLedger(cur SendRecord, found bool, effect CreditEffect) bool {
	switch effect {
	case RefundCredit:
		return found && cur.CreditTaken
	case ZeroCredits:
		return true
	}
	return false
}

// DecideComplete records an outcome (or a transient failure, StateRetry)
// of the record cur (found) as next says, with its effect on the credit it
// holds. sub is the ledger entry (loaded when NeedsLedger); orphan, if not
// nil, is a delivery report for next's msgid that arrived before it.
//
// An outcome is never overwritten. A record another attempt took over
// (pending under another owner) takes this attempt's outcome only if it is
// a send: WeChat has the message whatever the other attempt does, and the
// record says in_doubt; anything else is the other attempt's to decide.
func DecideComplete(cur SendRecord, found bool, next SendRecord, effect CreditEffect, sub Subscription, orphan *Delivery, now time.Time) CompleteDecision {
	now = now.UTC()
	if found && Final(cur.State) {
		return CompleteDecision{Record: cur}
	}
	if found && cur.State == StatePending && next.Owner != "" && cur.Owner != next.Owner && next.State != StateSent {
		return CompleteDecision{Record: cur}
	}
	d := CompleteDecision{Applied: true, Created: !found}
	if found {
		next.CreatedAt = cur.CreatedAt
		next.CreditTaken = cur.CreditTaken
		next.InDoubt = cur.InDoubt || next.InDoubt
		next.Attempts = max(next.Attempts, cur.Attempts)
		next.DedupeMark, next.CapMark = cur.DedupeMark, cur.CapMark
		next.Rev = cur.Rev
	} else {
		next.CreatedAt = now
	}
	next.UpdatedAt = now
	if Final(next.State) || next.State == StateRetry {
		next.Owner = ""
	}
	if next.State != StateSent && next.State != StatePending {
		d.ReleaseDedupe, d.ReleaseCap = next.DedupeMark, next.CapMark
		next.DedupeMark, next.CapMark = "", ""
	}
	switch effect {
	case RefundCredit:
		if next.CreditTaken {
			next.CreditTaken = false
			if s, changed := RefundTo(sub, now); changed {
				d.Sub = &s
			}
		}
	case ZeroCredits:
		next.CreditTaken = false
		if s, changed := ZeroOut(sub, now); changed {
			d.Sub = &s
		}
	}
	d.Record = next
	d.Announce = []SendRecord{next}
	if orphan != nil && next.MsgID != "" && orphan.MsgID == next.MsgID {
		delivered := next
		ApplyDelivery(&delivered, *orphan, now)
		d.Record, d.TookOrphan = delivered, true
		d.Announce = append(d.Announce, delivered)
	}
	return d
}

// RefundTo gives a credit a send did not use back to sub, unless a reject
// ended the subscription since (or it has no count).
func RefundTo(sub Subscription, now time.Time) (Subscription, bool) {
	if sub.Status != StatusAccept || sub.Kind == KindLongTerm {
		return sub, false
	}
	sub.Credits++
	sub.Source, sub.UpdatedAt = SourceRefund, now.UTC()
	return sub, true
}

// ZeroOut applies WeChat's 43101 to sub: a one-time subscription has no
// credit left, a long-term one is refused.
func ZeroOut(sub Subscription, now time.Time) (Subscription, bool) {
	if sub.Kind == KindLongTerm {
		if sub.Status == StatusReject {
			return sub, false
		}
		sub.Status = StatusReject
	} else {
		if sub.Credits == 0 && len(sub.Unpaired) == 0 {
			return sub, false
		}
		sub.Credits = 0
		sub.Unpaired = nil
	}
	sub.Source, sub.UpdatedAt = SourceWeChat, now.UTC()
	return sub, true
}

// DecideDefer puts a send in the schedule unless it already has an
// outcome or waits there. It returns the record to save.
func DecideDefer(cur SendRecord, found bool, rec SendRecord, now time.Time) (SendRecord, bool) {
	now = now.UTC()
	if found && (Final(cur.State) || cur.State == StateDeferred) {
		return cur, false
	}
	if found {
		rec.CreatedAt, rec.Attempts, rec.Rev = cur.CreatedAt, cur.Attempts, cur.Rev
	} else {
		rec.CreatedAt = now
	}
	rec.State, rec.UpdatedAt, rec.Owner = StateDeferred, now, ""
	return rec, true
}

// ApplyDelivery records WeChat's delivery report on a sent record.
func ApplyDelivery(rec *SendRecord, d Delivery, now time.Time) {
	rec.Delivery = d.Status
	rec.DeliveryCode, rec.DeliveryMsg = d.ErrCode, d.ErrMsg
	rec.UpdatedAt = now.UTC()
}

// DeliveryChanges reports whether d says something rec does not know yet.
func DeliveryChanges(rec SendRecord, d Delivery) bool { return rec.Delivery != d.Status }

// BindDecision says what binding b writes.
type BindDecision struct {
	// Moved is the binding the openid had to another user; it is removed.
	Moved *Binding
	// DropOpenID is the user's previous openid in the app, whose index
	// entry is removed ("" when none or unchanged).
	DropOpenID string
}

// DecideBind binds b.UserID to b.OpenID in b.App: an openid belongs to one
// user per app, and a user has one openid per app. userCur is the user's
// binding in the app (if hasUser); openidUser the user the openid is bound
// to ("" when none), with that user's binding prev.
func DecideBind(b Binding, userCur Binding, hasUser bool, openidUser string, prev Binding) BindDecision {
	var d BindDecision
	if openidUser != "" && openidUser != b.UserID {
		prev.App, prev.UserID = b.App, openidUser
		d.Moved = &prev
	}
	if hasUser && userCur.OpenID != b.OpenID {
		d.DropOpenID = userCur.OpenID
	}
	return d
}

// GrantsToAdd is what of grant a user who holds held does not hold yet:
// a grant keeps its original time.
func GrantsToAdd(held []Role, grant []Role) []Role {
	var out []Role
	for _, r := range grant {
		if !slices.Contains(held, r) && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// DedupeBlocks reports whether a reservation at now falls within the
// dedupe window of the last one under the same key (at).
func DedupeBlocks(at time.Time, window time.Duration, now time.Time) bool {
	return !at.IsZero() && now.Sub(at) < window
}

// ApplyChange applies one thing a user did (ch) to their ledger entry s.
// See Subscription for the rules: accepts add up, the same accept heard on
// both channels within ReconcileWindow counts once, a reject or ban ends it.
func ApplyChange(s *Subscription, ch SubscriptionChange, now time.Time) {
	if ch.Kind != "" {
		s.Kind = ch.Kind
	}
	if s.Kind == "" {
		s.Kind = KindOneTime
	}
	// Forget accepts too old to pair with anything.
	kept := s.Unpaired[:0]
	for _, m := range s.Unpaired {
		if now.Sub(m.At) <= ReconcileWindow {
			kept = append(kept, m)
		}
	}
	s.Unpaired = kept

	switch ch.Status {
	case StatusAccept:
		s.Status = StatusAccept
		if s.Kind == KindLongTerm {
			break
		}
		if i := twin(s.Unpaired, ch); i >= 0 {
			s.Unpaired = append(s.Unpaired[:i], s.Unpaired[i+1:]...)
			return // the same accept, heard twice: no new credit, source stays
		}
		s.Credits++
		if ch.Source == SourcePopup || ch.Source == SourceClient {
			s.Unpaired = append(s.Unpaired, AcceptMark{Source: ch.Source, At: ch.At})
		}
	case StatusReject, StatusBan:
		s.Status = ch.Status
		s.Credits = 0
		s.Unpaired = nil
	}
	s.Source = ch.Source
	s.UpdatedAt = now.UTC()
}

// twin finds the unpaired accept from the other channel that ch repeats.
func twin(marks []AcceptMark, ch SubscriptionChange) int {
	other := ""
	switch ch.Source {
	case SourcePopup:
		other = SourceClient
	case SourceClient:
		other = SourcePopup
	default:
		return -1
	}
	best, bestGap := -1, ReconcileWindow+1
	for i, m := range marks {
		if m.Source != other {
			continue
		}
		gap := ch.At.Sub(m.At)
		if gap < 0 {
			gap = -gap
		}
		if gap <= ReconcileWindow && gap < bestGap {
			best, bestGap = i, gap
		}
	}
	return best
}

// DecideChange applies one thing a user did (ch) to their ledger entry s
// (a change without a time happened now) and reports whether the entry
// changed: only a change is saved and announced.
func DecideChange(s Subscription, ch SubscriptionChange, now time.Time) (Subscription, bool) {
	if ch.At.IsZero() {
		ch.At = now
	}
	before := s
	before.Unpaired = append([]AcceptMark(nil), s.Unpaired...)
	s.Unpaired = append([]AcceptMark(nil), s.Unpaired...)
	ApplyChange(&s, ch, now)
	return s, !sameSubscription(before, s)
}

func sameSubscription(a, b Subscription) bool {
	if a.Status != b.Status || a.Kind != b.Kind || a.Credits != b.Credits || len(a.Unpaired) != len(b.Unpaired) {
		return false
	}
	for i := range a.Unpaired {
		if a.Unpaired[i] != b.Unpaired[i] {
			return false
		}
	}
	return true
}
