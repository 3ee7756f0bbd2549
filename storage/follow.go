package storage

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Follower is a person's relation to an official account: their openid in
// the account (not their mini program openid), the unionid that ties it to
// their other apps, and whether they follow it (a template message reaches
// only a follower).
type Follower struct {
	App       string    `json:"app"`
	OpenID    string    `json:"openid"`
	UnionID   string    `json:"unionid,omitempty"`
	Following bool      `json:"following"`
	Source    string    `json:"source"`
	UpdatedAt time.Time `json:"updated_at"`
	Rev       uint64    `json:"-"`
}

// Sources of a follower's state.
const (
	SourceFollowPush = "follow_push" // a subscribe/unsubscribe push, or WeChat's 43004
	SourceUserInfo   = "user_info"   // the user-info API, for followers of before
)

// Statuses and kind a follower's announcement carries (see FollowerChange).
const (
	StatusFollowing  = "following"
	StatusUnfollowed = "unfollowed"
	KindFollow       = "follow"
)

// FollowChange is what a push or the user-info API says of a follower.
type FollowChange struct {
	App, OpenID string
	// UnionID, "" when the source does not tell (a follow push): the one
	// known is kept.
	UnionID   string
	Following bool
	Source    string
	At        time.Time
	// Asked is, for an answer of the user-info API, the follower as the
	// state knew them just before WeChat was asked (the zero Follower if
	// not at all). If they changed since (a push arrived while the answer
	// was on its way), the answer is older than what is known: it may
	// still tell a unionid, not whether they follow. The stored UpdatedAt
	// is compared for equality, as a version: never two clocks.
	Asked *Follower
}

// DecideFollow applies ch to the follower cur (found), and reports whether
// anything changed.
func DecideFollow(cur Follower, found bool, ch FollowChange, now time.Time) (Follower, bool) {
	next := cur
	next.App, next.OpenID = ch.App, ch.OpenID
	if ch.UnionID != "" {
		next.UnionID = ch.UnionID
	}
	next.Following = ch.Following
	if ch.Asked != nil && found && !cur.UpdatedAt.Equal(ch.Asked.UpdatedAt) {
		// Changed since WeChat was asked: the answer is the older word.
		next.Following = cur.Following
		if cur.UnionID != "" {
			next.UnionID = cur.UnionID
		}
	}
	if found && next.UnionID == cur.UnionID && next.Following == cur.Following {
		return cur, false
	}
	next.Source, next.UpdatedAt = ch.Source, now.UTC()
	return next, true
}

// FollowerChange is a follower's announcement, in the ledger's form: it is
// published on subscriptions.<app> like other ledger changes, with kind
// "follow" and status following or unfollowed.
func FollowerChange(f Follower) Subscription {
	status := StatusUnfollowed
	if f.Following {
		status = StatusFollowing
	}
	return Subscription{App: f.App, OpenID: f.OpenID, UnionID: f.UnionID, Status: status, Kind: KindFollow, Source: f.Source, UpdatedAt: f.UpdatedAt}
}

// ValidFollow reports a change that can never be applied (ErrInvalid).
func ValidFollow(ch FollowChange) error {
	if ch.App == "" || ch.OpenID == "" {
		return fmt.Errorf("%w: a follower needs app and openid", ErrInvalid)
	}
	return nil
}

// SaveFollowers records what the user-info API (or WeChat's answers) said
// of followers, and announces what changed.
func (db *DB) SaveFollowers(ctx context.Context, chs ...FollowChange) error {
	for _, ch := range chs {
		if err := ValidFollow(ch); err != nil {
			return fmt.Errorf("save followers: %w", err)
		}
	}
	err := db.update(ctx, func(tx *bolt.Tx) error {
		now := db.now()
		for _, ch := range chs {
			if _, err := db.followTx(tx, ch, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save %d followers: %w", len(chs), err)
	}
	return nil
}

// followTx applies one change inside tx, keeping the unionid index.
func (db *DB) followTx(tx *bolt.Tx, ch FollowChange, now time.Time) (Follower, error) {
	b := tx.Bucket(bucketFollowers)
	k := key(ch.App, ch.OpenID)
	var cur Follower
	found, err := getJSON(b, k, &cur)
	if err != nil {
		return Follower{}, err
	}
	next, changed := DecideFollow(cur, found, ch, now)
	if !changed {
		return next, nil
	}
	idx := tx.Bucket(bucketUnionIDs)
	// The old entry goes only if it still names this follower: another
	// openid may have claimed the unionid since.
	if old := key("f", ch.App, cur.UnionID); found && cur.UnionID != "" && cur.UnionID != next.UnionID && string(idx.Get(old)) == ch.OpenID {
		if err := idx.Delete(old); err != nil {
			return Follower{}, err
		}
	}
	if next.UnionID != "" {
		if err := idx.Put(key("f", ch.App, next.UnionID), []byte(next.OpenID)); err != nil {
			return Follower{}, err
		}
	}
	if err := putJSON(b, k, next); err != nil {
		return Follower{}, err
	}
	if db.ledgerHook != nil {
		return next, appendOutbox(tx, db.ledgerHook(FollowerChange(next))...)
	}
	return next, nil
}

// Follower returns what is known of openid's relation to the account app.
func (db *DB) Follower(_ context.Context, app, openid string) (Follower, bool, error) {
	var f Follower
	var found bool
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		found, err = getJSON(tx.Bucket(bucketFollowers), key(app, openid), &f)
		return err
	})
	return f, found, err
}

// FollowerByUnionID finds the person unionid in the official account app.
func (db *DB) FollowerByUnionID(_ context.Context, app, unionid string) (Follower, bool, error) {
	var f Follower
	var found bool
	err := db.view(func(tx *bolt.Tx) error {
		openid := tx.Bucket(bucketUnionIDs).Get(key("f", app, unionid))
		if openid == nil {
			return nil
		}
		var err error
		found, err = getJSON(tx.Bucket(bucketFollowers), key(app, string(openid)), &f)
		return err
	})
	return f, found, err
}

// BindingsByUnionID lists the bindings, in every app, that carry unionid:
// one person's accounts.
func (db *DB) BindingsByUnionID(_ context.Context, unionid string) ([]Binding, error) {
	var out []Binding
	err := db.view(func(tx *bolt.Tx) error {
		p := prefix("b", unionid)
		c := tx.Bucket(bucketUnionIDs).Cursor()
		for k, v := c.Seek(p); k != nil && len(k) >= len(p) && string(k[:len(p)]) == string(p); k, v = c.Next() {
			var b Binding
			found, err := getRecord(tx.Bucket(bucketBindings), v, &b)
			if err != nil {
				return err
			}
			if found && b.UnionID == unionid {
				out = append(out, b)
			}
		}
		return nil
	})
	return out, err
}
