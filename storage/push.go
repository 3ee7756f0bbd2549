package storage

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Delivery is WeChat's final word on one send (subscribe_msg_sent_event).
type Delivery struct {
	MsgID   string
	Status  string // "delivered" or "undelivered"
	ErrCode int
	ErrMsg  string
}

// PushChanges is everything one WeChat push asks of the ledger.
type PushChanges struct {
	// DedupeKey identifies the push across WeChat's retries. A push whose
	// key was seen before changes nothing.
	DedupeKey     string
	Subscriptions []SubscriptionChange
	Deliveries    []Delivery
	// Follows are official-account follows and unfollows.
	Follows []FollowChange
	// Announce builds the messages that publish a delivery result.
	Announce func(SendRecord) []OutboxMessage
}

// PushResult says what a push changed.
type PushResult struct {
	// Duplicate: the push was applied before (a WeChat retry).
	Duplicate     bool
	Subscriptions []Subscription // after the change
	Follows       []Follower     // after the change
	Deliveries    []SendRecord   // sends whose delivery was recorded
	// UnknownMsgIDs are delivery reports for msgids no send record has yet.
	// They are kept for a while (Retention.Pushes): the report may have
	// raced ahead of the commit of its own send, and is applied when that
	// send is recorded. Reports for msgids wxbridge never sent (another
	// system sending with the same app) expire unused.
	UnknownMsgIDs []string
}

// orphan is a delivery report waiting for its send record.
type orphan struct {
	Delivery
	At time.Time `json:"at"`
}

// ApplyPush applies a push exactly once: its dedupe key, the ledger changes
// and the delivery results commit in one transaction.
func (db *DB) ApplyPush(ctx context.Context, p PushChanges) (PushResult, error) {
	if p.DedupeKey == "" {
		return PushResult{}, fmt.Errorf("apply push: %w: a dedupe key is required", ErrInvalid)
	}
	for _, ch := range p.Subscriptions {
		if err := validChange(ch); err != nil {
			return PushResult{}, fmt.Errorf("apply push %s: %w", p.DedupeKey, err)
		}
	}
	for _, ch := range p.Follows {
		if err := ValidFollow(ch); err != nil {
			return PushResult{}, fmt.Errorf("apply push %s: %w", p.DedupeKey, err)
		}
	}
	var res PushResult
	err := db.update(ctx, func(tx *bolt.Tx) error {
		res = PushResult{}
		seen := tx.Bucket(bucketCallbacks)
		k := []byte(p.DedupeKey)
		if seen.Get(k) != nil {
			res.Duplicate = true
			return nil
		}
		now := db.now()
		if err := seen.Put(k, u64(uint64(now.UnixNano()))); err != nil {
			return err
		}
		if err := tx.Bucket(bucketPushTime).Put(timeKey(now, p.DedupeKey), nil); err != nil {
			return err
		}
		for _, ch := range p.Subscriptions {
			s, err := db.applyChangeTx(tx, ch, now)
			if err != nil {
				return err
			}
			res.Subscriptions = append(res.Subscriptions, s)
		}
		for _, ch := range p.Follows {
			f, err := db.followTx(tx, ch, now)
			if err != nil {
				return err
			}
			res.Follows = append(res.Follows, f)
		}
		for _, d := range p.Deliveries {
			rec, ok, err := db.recordDeliveryTx(tx, d, p.Announce)
			if err != nil {
				return err
			}
			if ok {
				res.Deliveries = append(res.Deliveries, rec)
				continue
			}
			res.UnknownMsgIDs = append(res.UnknownMsgIDs, d.MsgID)
			if err := putJSON(tx.Bucket(bucketOrphans), []byte(d.MsgID), orphan{Delivery: d, At: now}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return PushResult{}, fmt.Errorf("apply push %s: %w", p.DedupeKey, err)
	}
	return res, nil
}

func (db *DB) recordDeliveryTx(tx *bolt.Tx, d Delivery, announce func(SendRecord) []OutboxMessage) (SendRecord, bool, error) {
	var rec SendRecord
	k := tx.Bucket(bucketMsgIDs).Get([]byte(d.MsgID))
	if k == nil {
		return rec, false, nil
	}
	found, err := getRecord(tx.Bucket(bucketSends), k, &rec)
	if err != nil || !found {
		return rec, false, err
	}
	if !DeliveryChanges(rec, d) {
		return rec, true, nil
	}
	ApplyDelivery(&rec, d, db.now())
	if err := putRecord(tx.Bucket(bucketSends), k, &rec); err != nil {
		return rec, false, err
	}
	if announce != nil {
		if err := appendOutbox(tx, announce(rec)...); err != nil {
			return rec, false, err
		}
	}
	return rec, true, nil
}

// loadOrphan returns a delivery report that arrived before the send it
// reports on was recorded.
func loadOrphan(tx *bolt.Tx, msgid string) (Delivery, bool, error) {
	var o orphan
	found, err := getJSON(tx.Bucket(bucketOrphans), []byte(msgid), &o)
	if err != nil || !found {
		return Delivery{}, false, err
	}
	return o.Delivery, true, nil
}

// timeOf decodes a value written by u64(UnixNano).
func timeOf(v []byte) time.Time {
	if len(v) != 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(beUint64(v)))
}
