package natskv

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/wxbridge/wxbridge/storage"
)

// An official account's follower is the key follower.<app>.<openid> (its
// JSON), and the index entry uid.follower.<app>.<unionid> names its openid.
// Both are written in one batch, the follower conditional on the revision
// it was decided on, the index entry on the revision it was read at (two
// openids may claim one unionid, in one account only by WeChat's mistake:
// the last claim holds). An index entry names a follower that carries its
// unionid; a follower whose unionid another claimed is not found by it.

// maxFollowBatch bounds the changes SaveFollowers writes in one batch: a
// change writes up to three keys and its announcements, and a batch holds
// at most maxBatch messages.
const maxFollowBatch = 200

// SaveFollowers records what the user-info API (or WeChat's answers) said
// of followers, and announces what changed: up to maxFollowBatch changes
// in one atomic batch, more in several.
func (s *Store) SaveFollowers(ctx context.Context, chs ...storage.FollowChange) error {
	if err := s.check(); err != nil {
		return err
	}
	for _, ch := range chs {
		if err := storage.ValidFollow(ch); err != nil {
			return fmt.Errorf("save followers: %w", err)
		}
	}
	for rest := chs; len(rest) > 0; {
		part := rest[:min(len(rest), maxFollowBatch)]
		rest = rest[len(part):]
		st := s.newState()
		err := s.update(ctx, st, func() (*writes, error) {
			w := newWrites("f")
			if _, err := s.applyFollows(ctx, w, st, part, s.now()); err != nil {
				return nil, err
			}
			if len(w.msgs) == 0 {
				return nil, nil
			}
			return w, nil
		})
		if err != nil {
			return fmt.Errorf("save %d followers: %w", len(chs), err)
		}
	}
	return nil
}

// followSubjects is what applying chs reads first: each follower and the
// index entry of the unionid a change names.
func (s *Store) followSubjects(chs []storage.FollowChange) []string {
	var out []string
	for _, ch := range chs {
		out = append(out, s.n.follower(ch.App, ch.OpenID))
		if ch.UnionID != "" {
			out = append(out, s.n.followerUnion(ch.App, ch.UnionID))
		}
	}
	return out
}

// applyFollows decides chs in turn on what st holds (reading what it
// lacks) and adds to w each changed follower, once, its index entries and
// the announcement of every change. It returns the follower after each
// change.
func (s *Store) applyFollows(ctx context.Context, w *writes, st *state, chs []storage.FollowChange, now time.Time) ([]storage.Follower, error) {
	if err := st.need(ctx, s.followSubjects(chs)...); err != nil {
		return nil, err
	}
	type follower struct {
		subj         string
		was          storage.Follower // as read
		wasFound     bool
		now          storage.Follower
		found, dirty bool
	}
	byKey := map[string]*follower{}
	var order []*follower
	var out []storage.Follower
	var announce []storage.Subscription
	for _, ch := range chs {
		subj := s.n.follower(ch.App, ch.OpenID)
		f, ok := byKey[subj]
		if !ok {
			f = &follower{subj: subj}
			var err error
			if f.wasFound, err = decodeFollower(st.get(subj), &f.was); err != nil {
				return nil, err
			}
			f.now, f.found = f.was, f.wasFound
			byKey[subj] = f
			order = append(order, f)
		}
		next, changed := storage.DecideFollow(f.now, f.found, ch, now)
		f.now, f.found = next, true
		out = append(out, next)
		if changed {
			f.dirty = true
			announce = append(announce, storage.FollowerChange(next))
		}
	}

	// The index entries of unionids a follower gave up are read now: only
	// one that still names the follower is removed.
	var olds []string
	for _, f := range order {
		if f.dirty && f.wasFound && f.was.UnionID != "" && f.was.UnionID != f.now.UnionID {
			olds = append(olds, s.n.followerUnion(f.was.App, f.was.UnionID))
		}
	}
	if err := st.need(ctx, olds...); err != nil {
		return nil, err
	}
	// What each touched index entry names once the batch is applied ("":
	// nothing), in the order first touched: a batch writes a key once.
	names := map[string]string{}
	var touched []string
	name := func(subj string) string {
		if v, ok := names[subj]; ok {
			return v
		}
		touched = append(touched, subj)
		if e := st.get(subj); e.present {
			names[subj] = string(e.val)
		} else {
			names[subj] = ""
		}
		return names[subj]
	}
	for _, f := range order {
		if !f.dirty || (f.wasFound && f.was.UnionID == f.now.UnionID) {
			continue
		}
		if f.wasFound && f.was.UnionID != "" {
			if subj := s.n.followerUnion(f.now.App, f.was.UnionID); name(subj) == f.now.OpenID {
				names[subj] = ""
			}
		}
		if f.now.UnionID != "" {
			subj := s.n.followerUnion(f.now.App, f.now.UnionID)
			name(subj)
			names[subj] = f.now.OpenID
		}
	}
	for _, subj := range touched {
		e := st.get(subj)
		switch v := names[subj]; {
		case v != "" && (!e.present || string(e.val) != v):
			w.putAt(subj, []byte(v), 0, e.rev)
		case v == "" && e.present:
			w.del(subj, s.opts.MarkerTTL, true, e.rev)
		}
	}
	for _, f := range order {
		if f.dirty {
			data, err := json.Marshal(f.now)
			if err != nil {
				return nil, fmt.Errorf("encode follower %s: %w", clip(f.now.OpenID), err)
			}
			w.putAt(f.subj, data, 0, st.get(f.subj).rev)
		}
	}
	if s.opts.LedgerHook != nil {
		for _, a := range announce {
			for _, m := range s.opts.LedgerHook(a) {
				if err := w.outbox(s.n, m); err != nil {
					return nil, err
				}
			}
		}
	}
	return out, nil
}

// Follower returns what is known of openid's relation to the account app.
func (s *Store) Follower(ctx context.Context, app, openid string) (storage.Follower, bool, error) {
	if err := s.check(); err != nil {
		return storage.Follower{}, false, err
	}
	subj := s.n.follower(app, openid)
	got, err := s.read(ctx, subj)
	if err != nil {
		return storage.Follower{}, false, fmt.Errorf("read follower %s of %s: %w", clip(openid), clip(app), err)
	}
	var f storage.Follower
	found, err := decodeFollower(got[subj], &f)
	if err != nil {
		return storage.Follower{}, false, fmt.Errorf("read follower %s of %s: %w", clip(openid), clip(app), err)
	}
	if found {
		f.Rev = got[subj].rev
	}
	return f, found, nil
}

// FollowerByUnionID finds the person unionid in the official account app:
// the index entry names the openid, one more get reads the follower, who
// counts only if it still carries unionid.
func (s *Store) FollowerByUnionID(ctx context.Context, app, unionid string) (storage.Follower, bool, error) {
	if err := s.check(); err != nil {
		return storage.Follower{}, false, err
	}
	if unionid == "" {
		return storage.Follower{}, false, nil
	}
	idx := s.n.followerUnion(app, unionid)
	got, err := s.read(ctx, idx)
	if err == nil {
		// Not found would make the bridge walk the follower list.
		err = s.confirm(ctx, got, idx)
	}
	if err != nil {
		return storage.Follower{}, false, fmt.Errorf("find unionid %s in %s: %w", clip(unionid), clip(app), err)
	}
	if !got[idx].present {
		return storage.Follower{}, false, nil
	}
	f, found, err := s.Follower(ctx, app, string(got[idx].val))
	if err != nil || !found || f.UnionID != unionid {
		return storage.Follower{}, false, err
	}
	return f, true, nil
}

func decodeFollower(e entry, f *storage.Follower) (bool, error) {
	if !e.present {
		return false, nil
	}
	if err := json.Unmarshal(e.val, f); err != nil {
		return true, fmt.Errorf("decode follower: %w", err)
	}
	return true, nil
}
