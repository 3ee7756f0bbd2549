package natskv

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"strings"
	"time"

	"github.com/wxbridge/wxbridge/storage"
)

// snapshot is what a Lookup read for the Reserve of the same send: the
// entries of one consistent get, with their revisions.
type snapshot struct {
	key string
	e   map[string]entry
}

// Lookup reads in one direct batch get whether the event is done, the
// send record and the binding and, when it knows the recipient's openid
// (given, or remembered from an earlier lookup and confirmed by the
// binding read in the same get), the ledger entry, its user, and the
// dedupe and cap entries: Reserve then needs no read of its own.
func (s *Store) Lookup(ctx context.Context, l storage.Lookup) (storage.Found, error) {
	if err := s.check(); err != nil {
		return storage.Found{}, err
	}
	recSubj := s.n.send(l.SendKey)
	subjects := []string{recSubj}
	if l.EventKey != "" {
		subjects = append(subjects, s.n.event(l.EventKey))
	}
	var bindSubj string
	if l.UserID != "" {
		bindSubj = s.n.binding(l.UserID, l.App)
		subjects = append(subjects, bindSubj)
	}
	openid := l.OpenID
	if openid == "" && l.UserID != "" {
		openid = s.openids.get(l.App, l.UserID)
	}
	if openid != "" && l.TemplateID != "" {
		subjects = append(subjects, s.n.sub(l.App, openid, l.TemplateID), s.n.openid(l.App, openid))
	}
	if l.DedupeKey != "" {
		subjects = append(subjects, s.n.dedupe(l.DedupeKey))
	}
	if l.CapKey != "" {
		subjects = append(subjects, s.n.capKey(l.CapKey))
	}
	got, err := s.read(ctx, subjects...)
	if err == nil && bindSubj != "" && l.OpenID == "" && !got[recSubj].present {
		// A first send needs the binding; not bound would be its outcome.
		err = s.confirm(ctx, got, bindSubj)
	}
	if err != nil {
		return storage.Found{}, fmt.Errorf("look up send %s: %w", printable(l.SendKey), err)
	}
	var f storage.Found
	if l.EventKey != "" {
		f.EventDone = got[s.n.event(l.EventKey)].present
	}
	if f.HasRecord, err = decodeRecord(got[recSubj], &f.Record); err != nil {
		return storage.Found{}, fmt.Errorf("look up send %s: %w", printable(l.SendKey), err)
	}
	if bindSubj != "" {
		if f.Bound, err = decodeBinding(got[bindSubj], &f.Binding); err != nil {
			return storage.Found{}, fmt.Errorf("look up binding of %s in %s: %w", clip(l.UserID), clip(l.App), err)
		}
		bound := ""
		if f.Bound {
			bound = f.Binding.OpenID
		}
		s.openids.set(l.App, l.UserID, bound)
		if l.OpenID == "" && bound != openid && openid != "" {
			// The remembered openid was wrong: its ledger entry is not the
			// recipient's.
			delete(got, s.n.sub(l.App, openid, l.TemplateID))
			delete(got, s.n.openid(l.App, openid))
		}
	}
	f.Snapshot = &snapshot{key: l.SendKey, e: got}
	return f, nil
}

// Reserve decides on what the lookup's snapshot, this store's own last
// writes and, for what they lack, one read say, and writes in one atomic
// batch the pending record, the credit spent with its announcement, and
// the dedupe and cap marks, each conditional on the revision it was
// decided on. A pending record of another owner is busy while that
// owner's lease key exists; taking it over is conditional on its
// revision, so exactly one bridge does.
func (s *Store) Reserve(ctx context.Context, req storage.ReserveRequest) (storage.ReserveResult, error) {
	if err := s.check(); err != nil {
		return storage.ReserveResult{}, err
	}
	defer s.userLock(req.Record)()
	st := s.newState()
	if snap, ok := req.Snapshot.(*snapshot); ok && snap.key == req.Record.Key {
		// Read before the bridge waited for its turn: as good as the
		// revisions the write checks, no better.
		for subj, e := range snap.e {
			st.assume(subj, e)
		}
	}
	recSubj := s.n.send(req.Record.Key)
	var res storage.ReserveResult
	var written *writes
	err := s.update(ctx, st, func() (*writes, error) {
		written = nil
		for revalidated := false; ; revalidated = true {
			// The ledger entry is the one of the channel the decision goes
			// by: the stored record's, or the request's for a retry that may
			// change channel. Which one is the decision's to say: it is
			// given the request's (which a lookup read) first, and decided
			// again on the other's if it went by that.
			ch := req.Record
			if !revalidated {
				s.assumeCached(st, s.reserveSubjects(req, ch)...)
			}
			if err := st.need(ctx, s.reserveSubjects(req, ch)...); err != nil {
				return nil, err
			}
			var rs storage.ReserveState
			var err error
			if rs.Found, err = decodeRecord(st.get(recSubj), &rs.Record); err != nil {
				return nil, err
			}
			if rs.Found && rs.Record.State == storage.StatePending && rs.Record.Owner != req.Owner {
				// Read with the lease, in the same get: a pending record
				// keeps its channel.
				more := []string{s.n.lease(rs.Record.Owner)}
				if req.CheckCredit && !storage.SameChannel(rs.Record, ch) {
					more = append(more, s.reserveSubjects(req, rs.Record)...)
				}
				if err := st.need(ctx, more...); err != nil {
					return nil, err
				}
			}
			now := s.now()
			var marks capList
			if req.DedupeKey != "" {
				rs.DedupeAt = decodeTime(st.get(s.n.dedupe(req.DedupeKey)))
			}
			if req.CapKey != "" {
				marks = decodeCap(st.get(s.n.capKey(req.CapKey))).since(now.Add(-req.CapPer))
				rs.CapCount = len(marks.marks)
			}
			alive := func(owner string) bool { return st.get(s.n.lease(owner)).present }
			var d storage.ReserveDecision
			for tries := 0; ; tries++ {
				if req.CheckCredit {
					rs.Sub = subscriptionOf(ch.App, ch.OpenID, ch.TemplateID)
					if _, err := decodeSub(st.get(s.n.sub(ch.App, ch.OpenID, ch.TemplateID)), &rs.Sub); err != nil {
						return nil, err
					}
				}
				d = storage.DecideReserve(rs, req, now, alive)
				if !req.CheckCredit || storage.SameChannel(d.Result.Record, ch) {
					break
				}
				if tries == 1 {
					// The channel is the record's or the request's, never
					// the ledger entry's: a decision that moves twice is a bug.
					return nil, fmt.Errorf("reservation goes by %s/%s, then by %s/%s", clip(ch.App), clip(ch.TemplateID),
						clip(d.Result.Record.App), clip(d.Result.Record.TemplateID))
				}
				ch = d.Result.Record
				if !revalidated {
					s.assumeCached(st, s.reserveSubjects(req, ch)...)
				}
				if err := st.need(ctx, s.reserveSubjects(req, ch)...); err != nil {
					return nil, err
				}
			}
			res = d.Result
			if !d.Write {
				// Nothing written checks what the decision read. A decision
				// that ends the send (no credit, suppressed, in doubt) is
				// made again on the leader's reads: a replica may not have
				// applied the latest writes (a credit granted, a mark
				// released, a lease renewed), or be catching up after a
				// restart. One on assumptions is made again on fresh reads.
				// An outcome stands whenever read; busy only waits.
				confirm := res.Outcome == storage.NoCredit || res.Outcome == storage.Suppressed || res.Outcome == storage.InDoubt
				if !revalidated && (confirm || (st.usedAssumptions() && res.Outcome != storage.AlreadyFinal)) {
					st.reset()
					st.fromLeader = confirm
					continue
				}
				return nil, nil
			}
			rec := res.Record
			w := newWrites("r")
			if d.MarkCap {
				rec.CapMark = capMark(req.CapKey, now, rec.Key)
			}
			res.Record = rec
			w.putAt(recSubj, storage.MarshalRecord(&rec), 0, st.get(recSubj).rev)
			if d.Sub != nil {
				if err := s.saveSub(w, st, *d.Sub); err != nil {
					return nil, err
				}
			}
			if d.MarkDedupe {
				subj := s.n.dedupe(req.DedupeKey)
				w.putAt(subj, encodeTime(now), req.DedupeWindow, st.get(subj).rev)
			}
			if d.MarkCap {
				subj := s.n.capKey(req.CapKey)
				marks.per = req.CapPer
				marks.marks = append(marks.marks, capMarkOf{at: now, key: rec.Key})
				w.putAt(subj, marks.encode(), req.CapPer, st.get(subj).rev)
			}
			written = w
			return w, nil
		}
	})
	if err != nil {
		return storage.ReserveResult{}, fmt.Errorf("reserve send %s: %w", printable(req.Record.Key), err)
	}
	if written != nil {
		res.Record.Rev = written.rev(recSubj)
	}
	return res, nil
}

// reserveSubjects is what deciding a reservation of rec reads.
func (s *Store) reserveSubjects(req storage.ReserveRequest, rec storage.SendRecord) []string {
	out := []string{s.n.send(req.Record.Key)}
	if req.CheckCredit {
		out = append(out, s.n.sub(rec.App, rec.OpenID, rec.TemplateID), s.n.openid(rec.App, rec.OpenID))
	}
	if req.DedupeKey != "" {
		out = append(out, s.n.dedupe(req.DedupeKey))
	}
	if req.CapKey != "" {
		out = append(out, s.n.capKey(req.CapKey))
	}
	return out
}

// assumeCached takes this store's last known entry of each subject not
// known yet, or a newer one than known.
func (s *Store) assumeCached(st *state, subjects ...string) {
	for _, subj := range subjects {
		c, ok := s.cache.get(subj)
		if !ok {
			continue
		}
		if e, known := st.e[subj]; !known || c.rev > e.rev {
			st.assume(subj, c)
		}
	}
}

// Complete records an outcome; see storage.DB.Complete for the contract.
func (s *Store) Complete(ctx context.Context, rec storage.SendRecord, effect storage.CreditEffect, build func(storage.SendRecord) []storage.OutboxMessage) (storage.SendRecord, bool, error) {
	return s.complete(ctx, rec, effect, build, false)
}

// CompleteEvent is Complete that also marks the event done, in the same
// batch, when the outcome is final.
func (s *Store) CompleteEvent(ctx context.Context, rec storage.SendRecord, effect storage.CreditEffect, build func(storage.SendRecord) []storage.OutboxMessage) (storage.SendRecord, bool, error) {
	return s.complete(ctx, rec, effect, build, true)
}

// complete writes in one atomic batch the outcome (conditional on the
// record's revision), the credit given back or zeroed with its
// announcement, the released dedupe and cap marks, the msgid index entry
// (conditional on no early delivery report for it), the early report
// taken, the event mark and the outbox entries. After a Reserve by this
// store it reads nothing: the record is the one it wrote, and an early
// report is assumed absent (the msgid index entry's condition checks it).
func (s *Store) complete(ctx context.Context, rec storage.SendRecord, effect storage.CreditEffect, build func(storage.SendRecord) []storage.OutboxMessage, eventDone bool) (storage.SendRecord, bool, error) {
	if err := s.check(); err != nil {
		return storage.SendRecord{}, false, err
	}
	defer s.userLock(rec)()
	st := s.newState()
	recSubj := s.n.send(rec.Key)
	var orphanSubj string
	if rec.MsgID != "" {
		orphanSubj = s.n.orphan(rec.MsgID)
	}
	if c, ok := s.cache.get(recSubj); ok && rec.Rev != 0 && c.rev == rec.Rev {
		st.assume(recSubj, c)
		if orphanSubj != "" {
			st.assume(orphanSubj, entry{})
		}
	}
	var saved storage.SendRecord
	var applied bool
	built := map[string][]storage.OutboxMessage{}
	var written *writes
	err := s.update(ctx, st, func() (*writes, error) {
		written = nil
		for revalidated := false; ; revalidated = true {
			first := []string{recSubj, orphanSubj}
			if effect != storage.KeepCredit {
				first = append(first, s.n.sub(rec.App, rec.OpenID, rec.TemplateID), s.n.openid(rec.App, rec.OpenID))
			}
			if _, ok := st.e[recSubj]; ok {
				first = first[:2]
			}
			if err := st.need(ctx, first...); err != nil {
				return nil, err
			}
			var cur storage.SendRecord
			found, err := decodeRecord(st.get(recSubj), &cur)
			if err != nil {
				return nil, err
			}
			var more []string
			if storage.NeedsLedger(cur, found, effect) {
				more = append(more, s.n.sub(rec.App, rec.OpenID, rec.TemplateID), s.n.openid(rec.App, rec.OpenID))
			}
			capKey, _, _, capOK := parseCapMark(cur.CapMark)
			if found && capOK && rec.State != storage.StateSent && rec.State != storage.StatePending {
				more = append(more, s.n.capKey(capKey))
			}
			if err := st.need(ctx, more...); err != nil {
				return nil, err
			}
			sub := subscriptionOf(rec.App, rec.OpenID, rec.TemplateID)
			if _, err := decodeSub(st.get(s.n.sub(rec.App, rec.OpenID, rec.TemplateID)), &sub); err != nil {
				return nil, err
			}
			var orphan *storage.Delivery
			if orphanSubj != "" {
				if o, ok := decodeOrphan(st.get(orphanSubj)); ok {
					orphan = &o
				}
			}
			now := s.now()
			d := storage.DecideComplete(cur, found, rec, effect, sub, orphan, now)
			saved, applied = d.Record, d.Applied
			markDone := eventDone && storage.Final(d.Record.State) && (d.Applied || found)
			if !d.Applied && st.usedAssumptions() && !revalidated {
				st.reset()
				continue
			}
			if !d.Applied {
				if !markDone {
					return nil, nil
				}
				w := newWrites("e")
				s.putEventDone(w, d.Record.EventID, d.Record.EventType, now)
				return w, nil
			}
			next := d.Record
			w := newWrites("c")
			var ttl time.Duration
			if storage.Final(next.State) {
				ttl = s.opts.Retention.Sends
			}
			w.putAt(recSubj, storage.MarshalRecord(&next), ttl, st.get(recSubj).rev)
			if d.Sub != nil {
				if err := s.saveSub(w, st, *d.Sub); err != nil {
					return nil, err
				}
			}
			if d.ReleaseDedupe != "" {
				w.del(s.n.dedupe(d.ReleaseDedupe), s.opts.MarkerTTL, false, 0)
			}
			if k, at, key, ok := parseCapMark(d.ReleaseCap); ok {
				subj := s.n.capKey(k)
				list := decodeCap(st.get(subj))
				left := list.without(at, key).since(now.Add(-list.per))
				if len(left.marks) == 0 {
					w.del(subj, s.opts.MarkerTTL, true, st.get(subj).rev)
				} else {
					// The newest mark left decides how long the entry lives.
					w.putAt(subj, left.encode(), left.newest().Add(left.per).Sub(now), st.get(subj).rev)
				}
			}
			if next.MsgID != "" {
				msgSubj := s.n.msgid(next.MsgID)
				if d.TookOrphan {
					w.put(msgSubj, []byte(next.Key), s.opts.Retention.Sends)
					w.del(orphanSubj, s.opts.MarkerTTL, true, st.get(orphanSubj).rev)
				} else {
					// A delivery report that raced ahead must not be missed:
					// the index entry is written only while none is kept.
					w.putIf(msgSubj, []byte(next.Key), s.opts.Retention.Sends, orphanSubj, st.get(orphanSubj).rev)
				}
			}
			if markDone {
				s.putEventDone(w, next.EventID, next.EventType, now)
			}
			if build != nil {
				for _, r := range d.Announce {
					// build is pure: a decision made again on the same
					// record announces it with what was built before.
					k := string(storage.MarshalRecord(&r))
					msgs, ok := built[k]
					if !ok {
						msgs = build(r)
						built[k] = msgs
					}
					for _, m := range msgs {
						if err := w.outbox(s.n, m); err != nil {
							return nil, err
						}
					}
				}
			}
			written = w
			return w, nil
		}
	})
	if err != nil {
		return storage.SendRecord{}, false, fmt.Errorf("record %s of %s: %w", rec.State, printable(rec.Key), err)
	}
	if written != nil && applied {
		saved.Rev = written.rev(recSubj)
	}
	return saved, applied, nil
}

func (s *Store) putEventDone(w *writes, id, typ string, now time.Time) {
	w.put(s.n.event(id), storage.MarshalRecord(&storage.EventRecord{ID: id, Type: typ, DoneAt: now}), s.opts.Retention.Sends)
}

// Send returns the record stored under key.
func (s *Store) Send(ctx context.Context, key string) (storage.SendRecord, bool, error) {
	if err := s.check(); err != nil {
		return storage.SendRecord{}, false, err
	}
	subj := s.n.send(key)
	got, err := s.read(ctx, subj)
	if err != nil {
		return storage.SendRecord{}, false, fmt.Errorf("read send %s: %w", printable(key), err)
	}
	var rec storage.SendRecord
	found, err := decodeRecord(got[subj], &rec)
	if err != nil {
		return storage.SendRecord{}, false, fmt.Errorf("read send %s: %w", printable(key), err)
	}
	return rec, found, nil
}

// EventSends lists the send records of one event, by key.
func (s *Store) EventSends(ctx context.Context, eventID string) ([]storage.SendRecord, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	got, err := s.list(ctx, s.n.eventSends(eventID))
	if err != nil {
		return nil, fmt.Errorf("list sends of event %s: %w", clip(eventID), err)
	}
	var out []storage.SendRecord
	for _, e := range got {
		var rec storage.SendRecord
		found, err := decodeRecord(e, &rec)
		if err != nil {
			return nil, fmt.Errorf("list sends of event %s: %w", clip(eventID), err)
		}
		if found && rec.EventID == eventID {
			out = append(out, rec)
		}
	}
	slices.SortFunc(out, func(a, b storage.SendRecord) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// EventDone returns the record of a fully handled event.
func (s *Store) EventDone(ctx context.Context, id string) (storage.EventRecord, bool, error) {
	if err := s.check(); err != nil {
		return storage.EventRecord{}, false, err
	}
	subj := s.n.event(id)
	got, err := s.read(ctx, subj)
	if err != nil {
		return storage.EventRecord{}, false, fmt.Errorf("read event %s: %w", clip(id), err)
	}
	e := got[subj]
	if !e.present {
		return storage.EventRecord{}, false, nil
	}
	var rec storage.EventRecord
	if err := storage.UnmarshalRecord(e.val, &rec); err != nil {
		return storage.EventRecord{}, false, fmt.Errorf("read event %s: %w", clip(id), err)
	}
	return rec, true, nil
}

// MarkEventDone records that every recipient of an event has an outcome,
// and queues out with it, in one batch.
func (s *Store) MarkEventDone(ctx context.Context, id, typ string, out ...storage.OutboxMessage) error {
	if err := s.check(); err != nil {
		return err
	}
	w := newWrites("e")
	s.putEventDone(w, id, typ, s.now())
	for _, m := range out {
		if err := w.outbox(s.n, m); err != nil {
			return fmt.Errorf("mark event %s done: %w", clip(id), err)
		}
	}
	if err := s.commit(ctx, w); err != nil {
		return fmt.Errorf("mark event %s done: %w", clip(id), err)
	}
	return nil
}

// Records in their binary form (storage.MarshalRecord).

func decodeRecord(e entry, rec *storage.SendRecord) (bool, error) {
	if !e.present {
		return false, nil
	}
	if err := storage.UnmarshalRecord(e.val, rec); err != nil {
		return true, fmt.Errorf("decode send record: %w", err)
	}
	rec.Rev = e.rev
	return true, nil
}

func decodeBinding(e entry, b *storage.Binding) (bool, error) {
	if !e.present {
		return false, nil
	}
	if err := storage.UnmarshalRecord(e.val, b); err != nil {
		return true, fmt.Errorf("decode binding: %w", err)
	}
	return true, nil
}

func subscriptionOf(app, openid, tpl string) storage.Subscription {
	return storage.Subscription{App: app, OpenID: openid, TemplateID: tpl}
}

// decodeSub fills s from a ledger entry, keeping its identity.
func decodeSub(e entry, s *storage.Subscription) (bool, error) {
	if !e.present {
		return false, nil
	}
	app, openid, tpl := s.App, s.OpenID, s.TemplateID
	if err := storage.UnmarshalRecord(e.val, s); err != nil {
		return true, fmt.Errorf("decode ledger entry: %w", err)
	}
	s.App, s.OpenID, s.TemplateID = app, openid, tpl
	return true, nil
}

func encodeTime(t time.Time) []byte { return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())) }

func decodeTime(e entry) time.Time {
	if !e.present || len(e.val) != 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(e.val))).UTC()
}
