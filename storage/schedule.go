package storage

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Deferred is a send waiting in the schedule (quiet hours). Payload is the
// caller's description of the work: enough to render and send it later.
type Deferred struct {
	Key     string    // the send key
	Due     time.Time // when to run it
	Payload []byte
	// Handle is the backend's own reference to the item handed out (the
	// JetStream KV store's message to acknowledge); nil for bbolt.
	Handle any
}

func scheduleKey(due time.Time, k string) []byte { return timeKey(due, k) }

// Defer records that a send waits until due, in one transaction: the send
// record in state deferred and its schedule entry. A send that already has
// an outcome is left alone (false).
func (db *DB) Defer(ctx context.Context, rec SendRecord, due time.Time, payload []byte) (bool, error) {
	var ok bool
	err := db.update(ctx, func(tx *bolt.Tx) error {
		ok = false
		sends := tx.Bucket(bucketSends)
		var cur SendRecord
		found, err := getRecord(sends, []byte(rec.Key), &cur)
		if err != nil {
			return err
		}
		now := db.now().UTC()
		next, save := DecideDefer(cur, found, rec, now)
		if !save {
			return nil
		}
		if !found {
			if err := tx.Bucket(bucketSendsTime).Put(timeKey(now, rec.Key), nil); err != nil {
				return err
			}
		}
		if err := putRecord(sends, []byte(rec.Key), &next); err != nil {
			return err
		}
		ok = true
		return tx.Bucket(bucketSchedule).Put(scheduleKey(due, rec.Key), payload)
	})
	if err != nil {
		return false, fmt.Errorf("defer send %s: %w", printable([]byte(rec.Key)), err)
	}
	if ok {
		select {
		case db.scheduleWake <- struct{}{}:
		default:
		}
	}
	return ok, nil
}

// WaitDue returns up to max deferred sends that are due, waiting up to
// wait for the earliest to come due (or for Defer to add an earlier one).
func (db *DB) WaitDue(ctx context.Context, max int, wait time.Duration) ([]Deferred, error) {
	deadline := time.Now().Add(wait)
	for {
		due, err := db.DueDeferred(ctx, db.now(), max)
		if err != nil || len(due) > 0 {
			return due, err
		}
		sleep := time.Until(deadline)
		if next, ok, err := db.NextDue(ctx); err != nil {
			return nil, err
		} else if ok {
			sleep = min(sleep, next.Sub(db.now()))
		}
		if sleep <= 0 {
			return nil, nil
		}
		timer := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-db.scheduleWake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// Settle takes a deferred send off the schedule (next zero) or moves it.
func (db *DB) Settle(ctx context.Context, d Deferred, next time.Time) error {
	return db.Reschedule(ctx, d, next)
}

// DueDeferred returns up to max deferred sends due at now, earliest first.
func (db *DB) DueDeferred(_ context.Context, now time.Time, max int) ([]Deferred, error) {
	var out []Deferred
	err := db.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSchedule).Cursor()
		for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
			due := timeOf(k[:8])
			if due.After(now) {
				break
			}
			out = append(out, Deferred{Key: string(k[8:]), Due: due, Payload: append([]byte(nil), v...)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read schedule: %w", err)
	}
	return out, nil
}

// NextDue returns when the earliest deferred send is due.
func (db *DB) NextDue(_ context.Context) (time.Time, bool, error) {
	var due time.Time
	var ok bool
	err := db.view(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketSchedule).Cursor().First(); k != nil {
			due, ok = timeOf(k[:8]), true
		}
		return nil
	})
	return due, ok, err
}

// Reschedule moves a deferred send to a new due time (or, with next zero,
// removes it from the schedule once its send has an outcome).
func (db *DB) Reschedule(ctx context.Context, d Deferred, next time.Time) error {
	err := db.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSchedule)
		if err := b.Delete(scheduleKey(d.Due, d.Key)); err != nil {
			return err
		}
		if next.IsZero() {
			return nil
		}
		return b.Put(scheduleKey(next, d.Key), d.Payload)
	})
	if err != nil {
		return fmt.Errorf("reschedule send %s: %w", printable([]byte(d.Key)), err)
	}
	return nil
}
