package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Send record states. Pending and Retry are not final: the event that owns
// the record is not acked until every record is final.
const (
	StatePending  = "pending"  // reserved; the WeChat call may be under way
	StateRetry    = "retry"    // the last attempt failed transiently; the credit was given back
	StateDeferred = "deferred" // waiting in the schedule (quiet hours)
	StateSent     = "sent"
	StateSkipped  = "skipped"
	StateFailed   = "failed"
)

// Final reports whether a state is an outcome.
func Final(state string) bool {
	return state == StateSent || state == StateSkipped || state == StateFailed
}

// SendRecord is the idempotency guard of one (event, rule, recipient).
type SendRecord struct {
	Key        string `json:"key"`
	EventID    string `json:"event_id"`
	EventType  string `json:"event_type"`
	Rule       string `json:"rule"`
	App        string `json:"app"`
	TemplateID string `json:"template_id"`
	UserID     string `json:"user_id,omitempty"`
	OpenID     string `json:"openid,omitempty"`

	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	ErrCode  int    `json:"errcode,omitempty"`
	ErrMsg   string `json:"errmsg,omitempty"`
	MsgID    string `json:"msgid,omitempty"`
	Attempts int    `json:"attempts"`
	// CreditTaken: this record holds one of the user's one-time credits.
	CreditTaken bool `json:"credit_taken,omitempty"`
	// InDoubt: a process died while this record was pending, so WeChat may
	// or may not have received an earlier attempt.
	InDoubt bool `json:"in_doubt,omitempty"`
	// Owner is the process incarnation that holds a pending record.
	Owner string `json:"owner,omitempty"`
	// DedupeMark and CapMark are the policy entries this send holds; they
	// are released if it does not end up sent.
	DedupeMark string `json:"dedupe_mark,omitempty"`
	CapMark    string `json:"cap_mark,omitempty"`
	// Delivery is "delivered" or "undelivered" once WeChat reports it,
	// with the code and status of its report.
	Delivery     string `json:"delivery,omitempty"`
	DeliveryCode int    `json:"delivery_code,omitempty"`
	DeliveryMsg  string `json:"delivery_msg,omitempty"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`

	// Trace is the W3C traceparent of the attempt that wrote the record,
	// so that its result and its delivery receipt join the event's trace.
	Trace string `json:"trace,omitempty"`

	// Rev is the record's revision in a backend that writes conditionally
	// (JetStream KV): not stored, set when read.
	Rev uint64 `json:"-"`
}

// SendKey is the idempotency key of one (event, rule, recipient).
func SendKey(eventID, rule, recipient string) string { return Key(eventID, rule, recipient) }

// Key joins the parts of a compound key (a dedupe or cap key) the way the
// store does: with NUL, which no id contains.
func Key(parts ...string) string { return string(key(parts...)) }

// Reservation outcomes.
type Reservation int

const (
	// Reserved: the record is pending and owned by the caller; send now.
	Reserved Reservation = iota
	// AlreadyFinal: the record has an outcome; do not send.
	AlreadyFinal
	// InDoubt: the record was left pending by an attempt that never
	// finished (its process died, or it failed to record the outcome), and
	// the caller did not ask to resend. Nothing was changed.
	InDoubt
	// Busy: another bridge, alive, has the record pending: its attempt is
	// under way. Nothing was changed; try again later.
	Busy
	// NoCredit: the ledger does not allow the send. Nothing was changed; the
	// reason is in Result.Reason.
	NoCredit
	// Suppressed: a policy holds the send back: the rule's dedupe window
	// (Reason "duplicate") or its frequency cap (Reason "rate_capped").
	// Nothing was changed.
	Suppressed
)

// Reasons Reserve gives for NoCredit and Suppressed.
const (
	ReasonNotSubscribed = "not_subscribed"
	ReasonRejected      = "rejected"
	ReasonDuplicate     = "duplicate"
	ReasonRateCapped    = "rate_capped"
)

// ReserveRequest asks to reserve one send.
type ReserveRequest struct {
	// Record carries the identity of the send: Key and the event, rule,
	// app, template and recipient fields.
	Record SendRecord
	// Owner identifies this process incarnation (kept on the record to say
	// who left it pending). The caller guarantees that it reserves a key
	// only once at a time, so any pending record it finds is in doubt.
	Owner string
	// CheckCredit consults (and for one-time templates consumes) the ledger.
	CheckCredit bool
	// Kind of the template: one_time or long_term.
	Kind string
	// ResendInDoubt takes over a record another process left pending
	// (delivery at_least_once). Otherwise such a record yields InDoubt.
	ResendInDoubt bool
	// DedupeKey, if set, suppresses the send when another send reserved the
	// same key less than DedupeWindow ago.
	DedupeKey    string
	DedupeWindow time.Duration
	// CapKey, if set, allows at most CapMax sends reserved under it per
	// CapPer.
	CapKey string
	CapMax int
	CapPer time.Duration
	// Snapshot is what a Lookup of the same send handed over (see Found).
	Snapshot any
}

// ReserveResult is what Reserve decided.
type ReserveResult struct {
	Outcome Reservation
	Record  SendRecord
	Reason  string // for NoCredit
}

// Reserve decides, in one transaction, whether a send may go out and if so
// writes its pending record and consumes the user's credit.
func (db *DB) Reserve(ctx context.Context, req ReserveRequest) (ReserveResult, error) {
	var res ReserveResult
	err := db.update(ctx, func(tx *bolt.Tx) error {
		sends := tx.Bucket(bucketSends)
		k := []byte(req.Record.Key)
		now := db.now().UTC()
		var st ReserveState
		var err error
		if st.Found, err = getRecord(sends, k, &st.Record); err != nil {
			return err
		}
		if req.DedupeKey != "" {
			st.DedupeAt = timeOf(tx.Bucket(bucketDedupe).Get([]byte(req.DedupeKey)))
		}
		if req.CapKey != "" {
			st.CapCount = countCap(tx.Bucket(bucketCaps), req.CapKey, now.Add(-req.CapPer))
		}
		// One process per database: a pending record of another incarnation
		// was left by one that died. The ledger entry is the one of the
		// channel the decision goes by: the request's first (a clean retry
		// may take it), the record's if the decision keeps that.
		var d ReserveDecision
		for ch := req.Record; ; ch = d.Result.Record {
			if req.CheckCredit {
				if st.Sub, _, err = db.loadSubscription(tx, ch.App, ch.OpenID, ch.TemplateID); err != nil {
					return err
				}
			}
			d = DecideReserve(st, req, now, nil)
			if !req.CheckCredit || SameChannel(d.Result.Record, ch) {
				break
			}
			if !SameChannel(ch, req.Record) {
				return fmt.Errorf("reservation goes by %s/%s, then by %s/%s", printable([]byte(ch.App)), printable([]byte(ch.TemplateID)),
					printable([]byte(d.Result.Record.App)), printable([]byte(d.Result.Record.TemplateID)))
			}
		}
		res = d.Result
		if !d.Write {
			return nil
		}
		rec := &res.Record
		if d.Sub != nil {
			if err := db.saveSubscription(tx, *d.Sub); err != nil {
				return err
			}
		}
		if d.MarkDedupe {
			if err := tx.Bucket(bucketDedupe).Put([]byte(req.DedupeKey), u64(uint64(now.UnixNano()))); err != nil {
				return err
			}
		}
		if d.MarkCap {
			mark := append(capPrefix(req.CapKey), u64(uint64(now.UnixNano()))...)
			mark = append(mark, rec.Key...)
			if err := tx.Bucket(bucketCaps).Put(mark, nil); err != nil {
				return err
			}
			rec.CapMark = string(mark)
		}
		if d.Created {
			if err := tx.Bucket(bucketSendsTime).Put(timeKey(now, rec.Key), nil); err != nil {
				return err
			}
		}
		return putRecord(sends, k, rec)
	})
	if err != nil {
		return ReserveResult{}, fmt.Errorf("reserve send %s: %w", printable([]byte(req.Record.Key)), err)
	}
	return res, nil
}

// SameChannel reports whether a and b go to one recipient by one template.
func SameChannel(a, b SendRecord) bool {
	return a.App == b.App && a.OpenID == b.OpenID && a.TemplateID == b.TemplateID
}

// countCap counts the cap entries of capKey made since since.
func countCap(b *bolt.Bucket, capKey string, since time.Time) int {
	p := capPrefix(capKey)
	n := 0
	c := b.Cursor()
	for k, _ := c.Seek(append(p, u64(uint64(since.UnixNano()))...)); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		n++
	}
	return n
}

// CreditEffect is what an outcome does to the credit a record holds.
type CreditEffect int

const (
	// KeepCredit: WeChat counted the send (or may have).
	KeepCredit CreditEffect = iota
	// RefundCredit: WeChat did not count it; give the credit back.
	RefundCredit
	// ZeroCredits: WeChat answered 43101; the user has nothing left.
	ZeroCredits
)

// Complete records an outcome (or a transient failure, StateRetry), applies
// its effect on the ledger and queues what build returns for the stored
// record, in one transaction. build may be nil; it must be pure. rec must carry the identity fields; a record that Reserve
// never saw (a recipient skipped before reserving) is created.
//
// An outcome is never overwritten: if the record is already final, nothing
// changes, nothing is queued, and the stored record is returned with
// applied false.
func (db *DB) Complete(ctx context.Context, rec SendRecord, effect CreditEffect, build func(SendRecord) []OutboxMessage) (saved SendRecord, applied bool, err error) {
	return db.complete(ctx, rec, effect, build, false)
}

// CompleteEvent is Complete for the last outcome of an event: it also
// records that the event was fully handled (MarkEventDone), in the same
// transaction, when the outcome is final. Events with one recipient, the
// common case, then cost one transaction fewer.
func (db *DB) CompleteEvent(ctx context.Context, rec SendRecord, effect CreditEffect, build func(SendRecord) []OutboxMessage) (saved SendRecord, applied bool, err error) {
	return db.complete(ctx, rec, effect, build, true)
}

func (db *DB) complete(ctx context.Context, rec SendRecord, effect CreditEffect, build func(SendRecord) []OutboxMessage, eventDone bool) (saved SendRecord, applied bool, err error) {
	err = db.update(ctx, func(tx *bolt.Tx) error {
		sends := tx.Bucket(bucketSends)
		k := []byte(rec.Key)
		now := db.now().UTC()
		var cur SendRecord
		found, err := getRecord(sends, k, &cur)
		if err != nil {
			return err
		}
		var sub Subscription
		if NeedsLedger(cur, found, effect) {
			if sub, _, err = db.loadSubscription(tx, rec.App, rec.OpenID, rec.TemplateID); err != nil {
				return err
			}
		}
		var orphan *Delivery
		if rec.MsgID != "" {
			if o, ok, err := loadOrphan(tx, rec.MsgID); err != nil {
				return err
			} else if ok {
				orphan = &o
			}
		}
		d := DecideComplete(cur, found, rec, effect, sub, orphan, now)
		saved, applied = d.Record, d.Applied
		if eventDone && Final(d.Record.State) && (d.Applied || found) {
			if err := putEventDone(tx, d.Record.EventID, d.Record.EventType, now); err != nil {
				return err
			}
		}
		if !d.Applied {
			return nil
		}
		if d.Created {
			if err := tx.Bucket(bucketSendsTime).Put(timeKey(now, rec.Key), nil); err != nil {
				return err
			}
		}
		if err := releaseMarks(tx, d.ReleaseDedupe, d.ReleaseCap); err != nil {
			return err
		}
		if d.Sub != nil {
			if err := db.saveSubscription(tx, *d.Sub); err != nil {
				return err
			}
		}
		if d.Record.MsgID != "" {
			if err := tx.Bucket(bucketMsgIDs).Put([]byte(d.Record.MsgID), k); err != nil {
				return err
			}
		}
		if d.TookOrphan {
			if err := tx.Bucket(bucketOrphans).Delete([]byte(d.Record.MsgID)); err != nil {
				return err
			}
		}
		if err := putRecord(sends, k, &d.Record); err != nil {
			return err
		}
		if build == nil {
			return nil
		}
		for _, r := range d.Announce {
			if err := appendOutbox(tx, build(r)...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return SendRecord{}, false, fmt.Errorf("record %s of %s: %w", rec.State, printable([]byte(rec.Key)), err)
	}
	return saved, applied, nil
}

// Send returns the record stored under key.
func (db *DB) Send(_ context.Context, k string) (SendRecord, bool, error) {
	var rec SendRecord
	var found bool
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		found, err = getRecord(tx.Bucket(bucketSends), []byte(k), &rec)
		return err
	})
	return rec, found, err
}

// EventSends lists the send records of one event.
func (db *DB) EventSends(_ context.Context, eventID string) ([]SendRecord, error) {
	var out []SendRecord
	err := db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSends)
		p := prefix(eventID)
		c := b.Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			var rec SendRecord
			if _, err := getRecord(b, k, &rec); err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}

// EventRecord says an event was fully handled.
type EventRecord struct {
	ID     string    `json:"id"`
	Type   string    `json:"type"`
	DoneAt time.Time `json:"done_at"`
}

// EventDone returns the record of a fully handled event.
func (db *DB) EventDone(_ context.Context, id string) (EventRecord, bool, error) {
	var rec EventRecord
	var found bool
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		found, err = getRecord(tx.Bucket(bucketEvents), []byte(id), &rec)
		return err
	})
	return rec, found, err
}

// MarkEventDone records that every recipient of an event has an outcome,
// and queues out with it.
func (db *DB) MarkEventDone(ctx context.Context, id, typ string, out ...OutboxMessage) error {
	err := db.update(ctx, func(tx *bolt.Tx) error {
		if err := putEventDone(tx, id, typ, db.now().UTC()); err != nil {
			return err
		}
		return appendOutbox(tx, out...)
	})
	if err != nil {
		return fmt.Errorf("mark event %s done: %w", id, err)
	}
	return nil
}

// capPrefix starts every entry of one cap key: its length, then the key,
// so the time that follows can be found without any separator.
func capPrefix(capKey string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(capKey)))
	return append(b, capKey...)
}

// capTime reads the time of a cap entry.
func capTime(k []byte) (time.Time, bool) {
	if len(k) < 2 {
		return time.Time{}, false
	}
	n := 2 + int(binary.BigEndian.Uint16(k))
	if len(k) < n+8 {
		return time.Time{}, false
	}
	return timeOf(k[n : n+8]), true
}

func releaseMarks(tx *bolt.Tx, dedupe, capMark string) error {
	if dedupe != "" {
		if err := tx.Bucket(bucketDedupe).Delete([]byte(dedupe)); err != nil {
			return err
		}
	}
	if capMark != "" {
		if err := tx.Bucket(bucketCaps).Delete([]byte(capMark)); err != nil {
			return err
		}
	}
	return nil
}

func putEventDone(tx *bolt.Tx, id, typ string, now time.Time) error {
	return putRecord(tx.Bucket(bucketEvents), []byte(id), &EventRecord{ID: id, Type: typ, DoneAt: now})
}

func timeKey(t time.Time, k string) []byte {
	b := u64(uint64(t.UnixNano()))
	return append(b, k...)
}

// Lookup names what a recipient's send starts from.
type Lookup struct {
	// EventKey, if set, asks whether the event is done too.
	EventKey string
	// SendKey is the send record's key.
	SendKey string
	// App and UserID name the binding to read; an openid recipient has
	// OpenID instead.
	App, UserID, OpenID string
	// TemplateID, DedupeKey and CapKey are what Reserve will read: a
	// backend that pays a round trip per read may read them now.
	TemplateID, DedupeKey, CapKey string
}

// Found is what Lookup read.
type Found struct {
	EventDone bool
	Record    SendRecord
	HasRecord bool
	Binding   Binding
	Bound     bool
	// Snapshot is what the backend read for a Reserve of the same send (with
	// the revisions it read at): Reserve may decide on it instead of reading
	// again. nil when the backend has nothing to hand over.
	Snapshot any
}

// Lookup reads the record, the binding and whether the event is done, in
// one read transaction.
func (db *DB) Lookup(_ context.Context, l Lookup) (Found, error) {
	var f Found
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		if l.EventKey != "" {
			f.EventDone = tx.Bucket(bucketEvents).Get([]byte(l.EventKey)) != nil
		}
		if f.HasRecord, err = getRecord(tx.Bucket(bucketSends), []byte(l.SendKey), &f.Record); err != nil {
			return err
		}
		if l.UserID != "" {
			f.Bound, err = getRecord(tx.Bucket(bucketBindings), key(l.UserID, l.App), &f.Binding)
		}
		return err
	})
	if err != nil {
		return Found{}, fmt.Errorf("look up send %s: %w", printable([]byte(l.SendKey)), err)
	}
	return f, nil
}
