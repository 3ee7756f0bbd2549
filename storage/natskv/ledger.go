package natskv

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/wxbridge/wxbridge/storage"
)

// saveSub writes a ledger entry (conditional on the revision st read it
// at) and its announcement. st must hold the entry and its openid's user.
func (s *Store) saveSub(w *writes, st *state, sub storage.Subscription) error {
	sub.UserID = string(st.get(s.n.openid(sub.App, sub.OpenID)).val)
	if !st.get(s.n.openid(sub.App, sub.OpenID)).present {
		sub.UserID = ""
	}
	subj := s.n.sub(sub.App, sub.OpenID, sub.TemplateID)
	w.putAt(subj, storage.MarshalRecord(&sub), 0, st.get(subj).rev)
	if s.opts.LedgerHook == nil {
		return nil
	}
	for _, m := range s.opts.LedgerHook(sub) {
		if err := w.outbox(s.n, m); err != nil {
			return err
		}
	}
	return nil
}

// ApplySubscription records a change made by the user, saving (and
// announcing) the ledger entry only if it changed.
func (s *Store) ApplySubscription(ctx context.Context, ch storage.SubscriptionChange) (storage.Subscription, error) {
	if err := s.check(); err != nil {
		return storage.Subscription{}, err
	}
	if err := storage.ValidChange(ch); err != nil {
		return storage.Subscription{}, fmt.Errorf("apply subscription: %w", err)
	}
	defer s.lock(ch.App, ch.OpenID)()
	st := s.newState()
	subj := s.n.sub(ch.App, ch.OpenID, ch.TemplateID)
	var out storage.Subscription
	err := s.update(ctx, st, func() (*writes, error) {
		if err := st.need(ctx, subj, s.n.openid(ch.App, ch.OpenID)); err != nil {
			return nil, err
		}
		sub := subscriptionOf(ch.App, ch.OpenID, ch.TemplateID)
		if _, err := decodeSub(st.get(subj), &sub); err != nil {
			return nil, err
		}
		sub, changed := storage.DecideChange(sub, ch, s.now())
		out = sub
		if !changed {
			return nil, nil
		}
		w := newWrites("s")
		if err := s.saveSub(w, st, sub); err != nil {
			return nil, err
		}
		return w, nil
	})
	if err != nil {
		return storage.Subscription{}, fmt.Errorf("apply %s of %s for %s: %w", ch.Status, clip(ch.TemplateID), clip(ch.OpenID), err)
	}
	return out, nil
}

// Subscription returns the ledger entry for one user and template.
func (s *Store) Subscription(ctx context.Context, app, openid, templateID string) (storage.Subscription, bool, error) {
	if err := s.check(); err != nil {
		return storage.Subscription{}, false, err
	}
	subj := s.n.sub(app, openid, templateID)
	got, err := s.read(ctx, subj)
	if err != nil {
		return storage.Subscription{}, false, fmt.Errorf("read ledger entry %s of %s: %w", clip(templateID), clip(openid), err)
	}
	sub := subscriptionOf(app, openid, templateID)
	found, err := decodeSub(got[subj], &sub)
	return sub, found, err
}

// Subscriptions lists a user's ledger entries in app.
func (s *Store) Subscriptions(ctx context.Context, app, openid string) ([]storage.Subscription, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	got, err := s.list(ctx, s.n.subs(app, openid))
	if err != nil {
		return nil, fmt.Errorf("list ledger entries of %s: %w", clip(openid), err)
	}
	user, _, err := s.UserByOpenID(ctx, app, openid)
	if err != nil {
		return nil, err
	}
	var out []storage.Subscription
	for _, e := range got {
		if !e.present {
			continue
		}
		// The record names its template (the key may hold only a hash of
		// the id); app and openid are the ones asked for.
		var sub storage.Subscription
		if err := storage.UnmarshalRecord(e.val, &sub); err != nil {
			return nil, fmt.Errorf("list ledger entries of %s: decode ledger entry: %w", clip(openid), err)
		}
		sub.App, sub.OpenID, sub.UserID = app, openid, user
		out = append(out, sub)
	}
	slices.SortFunc(out, func(a, b storage.Subscription) int { return strings.Compare(a.TemplateID, b.TemplateID) })
	return out, nil
}

// orphan is a delivery report waiting for its send record.
type orphan struct {
	storage.Delivery
	At time.Time `json:"at"`
}

func decodeOrphan(e entry) (storage.Delivery, bool) {
	var o orphan
	if !e.present || json.Unmarshal(e.val, &o) != nil {
		return storage.Delivery{}, false
	}
	return o.Delivery, true
}

// ApplyPush applies a push exactly once: its dedupe key (which must not
// exist yet), the ledger changes and their announcements, the follows (see
// follow.go) and their announcements, the delivery
// results and their announcements, and the reports for sends not
// recorded yet (each conditional on its msgid having no index entry), in
// one atomic batch.
func (s *Store) ApplyPush(ctx context.Context, p storage.PushChanges) (storage.PushResult, error) {
	if err := s.check(); err != nil {
		return storage.PushResult{}, err
	}
	if p.DedupeKey == "" {
		return storage.PushResult{}, fmt.Errorf("apply push: %w: a dedupe key is required", storage.ErrInvalid)
	}
	for _, ch := range p.Subscriptions {
		if err := storage.ValidChange(ch); err != nil {
			return storage.PushResult{}, fmt.Errorf("apply push %s: %w", clip(p.DedupeKey), err)
		}
	}
	for _, ch := range p.Follows {
		if err := storage.ValidFollow(ch); err != nil {
			return storage.PushResult{}, fmt.Errorf("apply push %s: %w", clip(p.DedupeKey), err)
		}
	}
	pushSubj := s.n.push(p.DedupeKey)
	st := s.newState()
	var res storage.PushResult
	err := s.update(ctx, st, func() (*writes, error) {
		res = storage.PushResult{}
		first := []string{pushSubj}
		for _, ch := range p.Subscriptions {
			first = append(first, s.n.sub(ch.App, ch.OpenID, ch.TemplateID), s.n.openid(ch.App, ch.OpenID))
		}
		first = append(first, s.followSubjects(p.Follows)...)
		for _, d := range p.Deliveries {
			first = append(first, s.n.msgid(d.MsgID))
		}
		if err := st.need(ctx, first...); err != nil {
			return nil, err
		}
		if st.get(pushSubj).present {
			res.Duplicate = true
			return nil, nil
		}
		var sends []string
		for _, d := range p.Deliveries {
			if e := st.get(s.n.msgid(d.MsgID)); e.present {
				sends = append(sends, s.n.send(string(e.val)))
			}
		}
		if err := st.need(ctx, sends...); err != nil {
			return nil, err
		}
		now := s.now()
		w := newWrites("p")
		w.putAt(pushSubj, encodeTime(now), s.opts.Retention.Pushes, st.get(pushSubj).rev)

		// Several changes of one entry apply in turn and save once.
		subs := map[string]storage.Subscription{}
		var order []string
		for _, ch := range p.Subscriptions {
			subj := s.n.sub(ch.App, ch.OpenID, ch.TemplateID)
			sub, seen := subs[subj]
			if !seen {
				sub = subscriptionOf(ch.App, ch.OpenID, ch.TemplateID)
				if _, err := decodeSub(st.get(subj), &sub); err != nil {
					return nil, err
				}
			}
			sub, changed := storage.DecideChange(sub, ch, now)
			res.Subscriptions = append(res.Subscriptions, sub)
			subs[subj] = sub
			if changed && !slices.Contains(order, subj) {
				order = append(order, subj)
			}
		}
		for _, subj := range order {
			if err := s.saveSub(w, st, subs[subj]); err != nil {
				return nil, err
			}
		}
		follows, err := s.applyFollows(ctx, w, st, p.Follows, now)
		if err != nil {
			return nil, err
		}
		res.Follows = follows

		recs := map[string]storage.SendRecord{}
		var changed []string
		orphans := map[string]bool{}
		for _, d := range p.Deliveries {
			idx := st.get(s.n.msgid(d.MsgID))
			var rec storage.SendRecord
			found := false
			if idx.present {
				subj := s.n.send(string(idx.val))
				if r, ok := recs[subj]; ok {
					rec, found = r, true
				} else {
					// An index entry outliving its record is unknown too.
					found, _ = decodeRecord(st.get(subj), &rec)
				}
			}
			if !found {
				res.UnknownMsgIDs = append(res.UnknownMsgIDs, d.MsgID)
				if orphans[d.MsgID] {
					continue
				}
				orphans[d.MsgID] = true
				data, _ := json.Marshal(orphan{Delivery: d, At: now})
				// Kept only while the send is not recorded: its Complete
				// writes the msgid index entry.
				w.putIf(s.n.orphan(d.MsgID), data, s.opts.Retention.Pushes, s.n.msgid(d.MsgID), idx.rev)
				continue
			}
			subj := s.n.send(rec.Key)
			if storage.DeliveryChanges(rec, d) {
				storage.ApplyDelivery(&rec, d, now)
				if _, again := recs[subj]; !again {
					changed = append(changed, subj)
				}
				recs[subj] = rec
			}
			res.Deliveries = append(res.Deliveries, rec)
		}
		for _, subj := range changed {
			rec := recs[subj]
			var ttl time.Duration
			if storage.Final(rec.State) {
				ttl = s.opts.Retention.Sends
			}
			w.putAt(subj, storage.MarshalRecord(&rec), ttl, st.get(subj).rev)
			if p.Announce != nil {
				for _, m := range p.Announce(rec) {
					if err := w.outbox(s.n, m); err != nil {
						return nil, err
					}
				}
			}
		}
		return w, nil
	})
	if err != nil {
		return storage.PushResult{}, fmt.Errorf("apply push %s: %w", clip(p.DedupeKey), err)
	}
	return res, nil
}
