package storage

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Subscription statuses, kinds and sources of change.
const (
	StatusAccept = "accept"
	StatusReject = "reject"
	StatusBan    = "ban"

	KindOneTime  = "one_time"
	KindLongTerm = "long_term"

	SourcePopup  = "popup"  // subscribe_msg_popup_event push
	SourceChange = "change" // subscribe_msg_change_event push
	SourceClient = "client" // wx.requestSubscribeMessage result reported by the app's backend
	SourceSend   = "send"   // a send consumed a credit
	SourceRefund = "refund" // a send WeChat did not count gave its credit back
	SourceWeChat = "wechat" // WeChat answered 43101: no credit left
)

// ReconcileWindow is how far apart a client report and a popup push of the
// same accept may be and still count as one accept.
const ReconcileWindow = 10 * time.Minute

// Subscription is what the ledger knows about one user and one template.
//
// One-time templates: each accept is worth one send and accepts add up; a
// reject or ban ends the subscription (credits drop to zero). Long-term
// templates have no count, only a status.
//
// The same accept can reach wxbridge twice: from the popup push and from the
// client's report of wx.requestSubscribeMessage. Each accept is remembered
// for ReconcileWindow with its source; an accept from the other channel
// within that window pairs with it instead of adding a credit. Accepts from
// the same channel never pair: a user who accepts twice gets two credits.
type Subscription struct {
	App    string `json:"app"`
	OpenID string `json:"openid"`
	UserID string `json:"user_id,omitempty"`
	// UnionID is set on a follower's announcement (see FollowerChange).
	UnionID    string    `json:"unionid,omitempty"`
	TemplateID string    `json:"template_id"`
	Status     string    `json:"status"`
	Kind       string    `json:"kind"`
	Credits    int       `json:"credits"`
	Source     string    `json:"source"`
	UpdatedAt  time.Time `json:"updated_at"`
	// Unpaired holds recent accepts waiting for their twin from the other
	// channel.
	Unpaired []AcceptMark `json:"unpaired,omitempty"`
}

// AcceptMark is one recent accept and the channel it came by.
type AcceptMark struct {
	Source string    `json:"source"`
	At     time.Time `json:"at"`
}

// Usable reports whether a send may go out now, and if not, the reason
// wxbridge reports: "rejected" or "not_subscribed".
func (s Subscription) Usable() (ok bool, reason string) {
	switch {
	case s.Status == StatusReject || s.Status == StatusBan:
		return false, "rejected"
	case s.Status != StatusAccept:
		return false, "not_subscribed"
	case s.Kind == KindLongTerm:
		return true, ""
	case s.Credits > 0:
		return true, ""
	}
	return false, "not_subscribed"
}

// SubscriptionChange is one thing a user did to a subscription.
type SubscriptionChange struct {
	App        string
	OpenID     string
	TemplateID string
	Status     string // accept, reject or ban
	Kind       string // one_time or long_term; "" keeps what is known (one_time if nothing)
	Source     string // SourcePopup, SourceChange or SourceClient
	At         time.Time
}

// LedgerHook turns a ledger change into messages to publish. It runs inside
// the transaction that makes the change, so the change and its
// announcement commit together. It must be pure.
type LedgerHook func(Subscription) []OutboxMessage

// ApplySubscription records a change made by the user (a client report; a
// push goes through ApplyPush). It returns the subscription afterwards.
func (db *DB) ApplySubscription(ctx context.Context, ch SubscriptionChange) (Subscription, error) {
	if err := validChange(ch); err != nil {
		return Subscription{}, fmt.Errorf("apply subscription: %w", err)
	}
	var out Subscription
	err := db.update(ctx, func(tx *bolt.Tx) error {
		var err error
		out, err = db.applyChangeTx(tx, ch, db.now())
		return err
	})
	if err != nil {
		return Subscription{}, fmt.Errorf("apply %s of %s for %s: %w", ch.Status, ch.TemplateID, ch.OpenID, err)
	}
	return out, nil
}

// ValidChange reports a change that can never be applied (ErrInvalid).
func ValidChange(ch SubscriptionChange) error { return validChange(ch) }

func validChange(ch SubscriptionChange) error {
	if ch.App == "" || ch.OpenID == "" || ch.TemplateID == "" {
		return fmt.Errorf("%w: app, openid and template_id are required", ErrInvalid)
	}
	switch ch.Status {
	case StatusAccept, StatusReject, StatusBan:
		return nil
	}
	return fmt.Errorf("%w: subscription status %q (want accept, reject or ban)", ErrInvalid, ch.Status)
}

// applyChangeTx applies one change inside tx, saving (and announcing) the
// subscription only if it changed.
func (db *DB) applyChangeTx(tx *bolt.Tx, ch SubscriptionChange, now time.Time) (Subscription, error) {
	s, _, err := db.loadSubscription(tx, ch.App, ch.OpenID, ch.TemplateID)
	if err != nil {
		return Subscription{}, err
	}
	s, changed := DecideChange(s, ch, now)
	if !changed {
		return s, nil
	}
	return s, db.saveSubscription(tx, s)
}

// Subscription returns the ledger entry for one user and template.
func (db *DB) Subscription(_ context.Context, app, openid, templateID string) (Subscription, bool, error) {
	var s Subscription
	var found bool
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		s, found, err = db.loadSubscription(tx, app, openid, templateID)
		return err
	})
	return s, found, err
}

// Subscriptions lists a user's ledger entries in app.
func (db *DB) Subscriptions(_ context.Context, app, openid string) ([]Subscription, error) {
	var out []Subscription
	err := db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLedger)
		p := prefix(app, openid)
		c := b.Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			var s Subscription
			if _, err := getRecord(b, k, &s); err != nil {
				return err
			}
			s.UserID = string(tx.Bucket(bucketOpenIDs).Get(key(app, openid)))
			out = append(out, s)
		}
		return nil
	})
	return out, err
}

func (db *DB) loadSubscription(tx *bolt.Tx, app, openid, templateID string) (Subscription, bool, error) {
	s := Subscription{App: app, OpenID: openid, TemplateID: templateID}
	found, err := getRecord(tx.Bucket(bucketLedger), key(app, openid, templateID), &s)
	s.App, s.OpenID, s.TemplateID = app, openid, templateID
	return s, found, err
}

// saveSubscription writes s and queues its announcement in the same
// transaction.
func (db *DB) saveSubscription(tx *bolt.Tx, s Subscription) error {
	s.UserID = string(tx.Bucket(bucketOpenIDs).Get(key(s.App, s.OpenID)))
	if err := putRecord(tx.Bucket(bucketLedger), key(s.App, s.OpenID, s.TemplateID), &s); err != nil {
		return err
	}
	if db.ledgerHook == nil {
		return nil
	}
	return appendOutbox(tx, db.ledgerHook(s)...)
}
