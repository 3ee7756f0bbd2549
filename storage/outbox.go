package storage

import (
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// OutboxMessage is a NATS message queued in the same transaction as the
// state change it announces. A publisher drains the outbox; MsgID (sent as
// Nats-Msg-Id) lets JetStream drop the copy a crash between publish and
// delete may produce.
type OutboxMessage struct {
	Subject string            `json:"subject"`
	MsgID   string            `json:"msg_id,omitempty"`
	Header  map[string]string `json:"header,omitempty"`
	Payload []byte            `json:"payload"`
}

// OutboxEntry is a queued message and its position in the outbox.
type OutboxEntry struct {
	Seq uint64
	OutboxMessage
}

func appendOutbox(tx *bolt.Tx, msgs ...OutboxMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	b := tx.Bucket(bucketOutbox)
	for _, m := range msgs {
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		if err := putJSON(b, u64(seq), m); err != nil {
			return err
		}
	}
	return nil
}

// Enqueue queues messages for publication on their own.
func (db *DB) Enqueue(ctx context.Context, msgs ...OutboxMessage) error {
	if err := db.update(ctx, func(tx *bolt.Tx) error { return appendOutbox(tx, msgs...) }); err != nil {
		return fmt.Errorf("queue %d messages: %w", len(msgs), err)
	}
	return nil
}

// Outbox returns up to max queued messages, oldest first, starting after
// seq after.
func (db *DB) Outbox(_ context.Context, after uint64, max int) ([]OutboxEntry, error) {
	var out []OutboxEntry
	err := db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		c := b.Cursor()
		for k, _ := c.Seek(u64(after + 1)); k != nil && len(out) < max; k, _ = c.Next() {
			var m OutboxMessage
			if _, err := getJSON(b, k, &m); err != nil {
				return err
			}
			out = append(out, OutboxEntry{Seq: binary.BigEndian.Uint64(k), OutboxMessage: m})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// DeleteOutbox removes published messages.
func (db *DB) DeleteOutbox(ctx context.Context, seqs ...uint64) error {
	err := db.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		for _, s := range seqs {
			if err := b.Delete(u64(s)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete %d outbox messages: %w", len(seqs), err)
	}
	return nil
}

// OutboxReady is signalled after a commit that queued messages.
func (db *DB) OutboxReady() <-chan struct{} { return db.outboxReady }
