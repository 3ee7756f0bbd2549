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
	c := idx.Cursor()
	n := 0
	limit := u64(uint64(before.UnixNano()))
	var drop [][]byte
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], limit) < 0; k, _ = c.Next() {
		if n == expireChunk {
			return db.dropAll(tx, idx, drop, n, true)
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
		n++
	}
	return db.dropAll(tx, idx, drop, n, false)
}

func (db *DB) dropAll(_ *bolt.Tx, b *bolt.Bucket, keys [][]byte, n int, more bool) (int, bool, error) {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return 0, false, err
		}
	}
	return n, more, nil
}

// expireIndexed removes entries of data whose time index entry (time +
// key) is older than before.
func expireIndexed(tx *bolt.Tx, index, data []byte, before time.Time) (int, bool, error) {
	idx, b := tx.Bucket(index), tx.Bucket(data)
	limit := u64(uint64(before.UnixNano()))
	var drop [][]byte
	c := idx.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], limit) < 0; k, _ = c.Next() {
		if len(drop) == expireChunk {
			break
		}
		drop = append(drop, append([]byte(nil), k...))
	}
	for _, k := range drop {
		if err := b.Delete(k[8:]); err != nil {
			return 0, false, err
		}
		if err := idx.Delete(k); err != nil {
			return 0, false, err
		}
	}
	return len(drop), len(drop) == expireChunk, nil
}

func expireDedupe(tx *bolt.Tx, before time.Time) (int, bool, error) {
	b := tx.Bucket(bucketDedupe)
	var drop [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil && len(drop) < expireChunk; k, v = c.Next() {
		if timeOf(v).Before(before) {
			drop = append(drop, append([]byte(nil), k...))
		}
	}
	for _, k := range drop {
		if err := b.Delete(k); err != nil {
			return 0, false, err
		}
	}
	return len(drop), len(drop) == expireChunk, nil
}

// expireCaps removes cap entries older than before.
func expireCaps(tx *bolt.Tx, before time.Time) (int, bool, error) {
	b := tx.Bucket(bucketCaps)
	var drop [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && len(drop) < expireChunk; k, _ = c.Next() {
		if t, ok := capTime(k); ok && t.Before(before) {
			drop = append(drop, append([]byte(nil), k...))
		}
	}
	for _, k := range drop {
		if err := b.Delete(k); err != nil {
			return 0, false, err
		}
	}
	return len(drop), len(drop) == expireChunk, nil
}

// expireOrphans drops delivery reports whose send never showed up.
func expireOrphans(tx *bolt.Tx, before time.Time) (int, bool, error) {
	b := tx.Bucket(bucketOrphans)
	var drop [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil && len(drop) < expireChunk; k, v = c.Next() {
		var o orphan
		if err := json.Unmarshal(v, &o); err != nil || o.At.Before(before) {
			drop = append(drop, append([]byte(nil), k...))
		}
	}
	for _, k := range drop {
		if err := b.Delete(k); err != nil {
			return 0, false, err
		}
	}
	return len(drop), len(drop) == expireChunk, nil
}
