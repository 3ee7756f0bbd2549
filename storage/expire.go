package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Retention says how long records that only guard against repeats are
// kept. Send records must outlive every way an event can come back (the
// event stream's max age, a republish by a producer): an expired record
// lets the same event id send again.
type Retention struct {
	Sends  time.Duration // send records, their msgid index, event records, dedupe and cap entries
	Pushes time.Duration // callback dedupe keys (WeChat retries within seconds)
}

// ExpireStats counts what Expire removed.
type ExpireStats struct {
	Sends, Pushes, Dedupe, Caps, Orphans int
}

// expireChunk bounds the work of one transaction so expiry never holds the
// writer long.
const expireChunk = 2000

// Expire removes records older than the retention. Pending, retry and
// deferred send records are kept whatever their age: they are work not
// yet done.
func (db *DB) Expire(ctx context.Context, r Retention) (ExpireStats, error) {
	var st ExpireStats
	now := db.now()
	for _, step := range []struct {
		n  *int
		fn func(tx *bolt.Tx) (int, bool, error)
	}{
		{&st.Sends, func(tx *bolt.Tx) (int, bool, error) { return db.expireSends(tx, now.Add(-r.Sends)) }},
		{&st.Pushes, func(tx *bolt.Tx) (int, bool, error) {
			return expireIndexed(tx, bucketPushTime, bucketCallbacks, now.Add(-r.Pushes))
		}},
		{&st.Dedupe, func(tx *bolt.Tx) (int, bool, error) { return expireDedupe(tx, now.Add(-r.Sends)) }},
		{&st.Caps, func(tx *bolt.Tx) (int, bool, error) { return expireCaps(tx, now.Add(-r.Sends)) }},
		{&st.Orphans, func(tx *bolt.Tx) (int, bool, error) { return expireOrphans(tx, now.Add(-r.Pushes)) }},
	} {
		for {
			var n int
			var more bool
			err := db.update(ctx, func(tx *bolt.Tx) error {
				var err error
				n, more, err = step.fn(tx)
				return err
			})
			if err != nil {
				return st, fmt.Errorf("expire records: %w", err)
			}
			*step.n += n
			if !more {
				break
			}
		}
	}
	return st, nil
}

func (db *DB) expireSends(tx *bolt.Tx, before time.Time) (int, bool, error) {
	idx, sends := tx.Bucket(bucketSendsTime), tx.Bucket(bucketSends)
	limit := u64(uint64(before.UnixNano()))
	var drop [][]byte
	more := false
	c := idx.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], limit) < 0; k, _ = c.Next() {
		if len(drop) == expireChunk {
			more = true
			break
		}
		key := k[8:]
		var rec SendRecord
		found, err := getRecord(sends, key, &rec)
		if err != nil {
			return 0, false, err
		}
		if found && !Final(rec.State) {
			continue // unfinished work is never expired
		}
		if found {
			if rec.MsgID != "" {
				if err := tx.Bucket(bucketMsgIDs).Delete([]byte(rec.MsgID)); err != nil {
					return 0, false, err
				}
			}
			if err := tx.Bucket(bucketEvents).Delete([]byte(rec.EventID)); err != nil {
				return 0, false, err
			}
			if err := sends.Delete(key); err != nil {
				return 0, false, err
			}
		}
		drop = append(drop, append([]byte(nil), k...))
	}
	return len(drop), more, deleteKeys(idx, drop)
}

// expireIndexed removes entries of data whose time index entry (time +
// key) is older than before.
func expireIndexed(tx *bolt.Tx, index, data []byte, before time.Time) (int, bool, error) {
	idx, b := tx.Bucket(index), tx.Bucket(data)
	limit := u64(uint64(before.UnixNano()))
	var drop [][]byte
	c := idx.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], limit) < 0 && len(drop) < expireChunk; k, _ = c.Next() {
		drop = append(drop, append([]byte(nil), k...))
	}
	for _, k := range drop {
		if err := b.Delete(k[8:]); err != nil {
			return 0, false, err
		}
	}
	return len(drop), len(drop) == expireChunk, deleteKeys(idx, drop)
}

// deleteWhere deletes up to expireChunk entries of bucket for which old
// says so, and reports whether there may be more.
func deleteWhere(tx *bolt.Tx, bucket []byte, old func(k, v []byte) bool) (int, bool, error) {
	b := tx.Bucket(bucket)
	var drop [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil && len(drop) < expireChunk; k, v = c.Next() {
		if old(k, v) {
			drop = append(drop, append([]byte(nil), k...))
		}
	}
	return len(drop), len(drop) == expireChunk, deleteKeys(b, drop)
}

func deleteKeys(b *bolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func expireDedupe(tx *bolt.Tx, before time.Time) (int, bool, error) {
	return deleteWhere(tx, bucketDedupe, func(_, v []byte) bool { return timeOf(v).Before(before) })
}

func expireCaps(tx *bolt.Tx, before time.Time) (int, bool, error) {
	return deleteWhere(tx, bucketCaps, func(k, _ []byte) bool {
		t, ok := capTime(k)
		return ok && t.Before(before)
	})
}

// expireOrphans drops delivery reports whose send never showed up.
func expireOrphans(tx *bolt.Tx, before time.Time) (int, bool, error) {
	return deleteWhere(tx, bucketOrphans, func(_, v []byte) bool {
		var o orphan
		return json.Unmarshal(v, &o) != nil || o.At.Before(before)
	})
}
