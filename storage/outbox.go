package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// OutboxMessage is a NATS message queued in the same transaction as the
// state change it announces. A publisher drains the outbox; MsgID (sent as
// Nats-Msg-Id) lets JetStream drop the copy a crash between publish and
// delete may produce.
type OutboxMessage struct {
	Subject string
	MsgID   string
	Header  map[string]string
	Payload []byte
}

// OutboxEntry is a queued message and its position in the outbox. Err is
// set for an entry that cannot be read (written by an incompatible
// version, or damaged): the publisher drops it with a log line rather than
// let it block every message behind it.
type OutboxEntry struct {
	Seq uint64
	OutboxMessage
	Err error
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
		if err := b.Put(u64(seq), m.encode()); err != nil {
			return err
		}
	}
	return nil
}

// Outbox entries are written and read once each, on the hot path, so they
// have a compact binary form rather than JSON (which would also base64 the
// payload): a version byte, then subject, msg id and headers as
// length-prefixed strings, then the payload to the end.
const outboxV1 = 1

func (m OutboxMessage) encode() []byte {
	n := 1 + len(m.Subject) + len(m.MsgID) + len(m.Payload) + 3*binary.MaxVarintLen32
	for k, v := range m.Header {
		n += len(k) + len(v) + 2*binary.MaxVarintLen32
	}
	b := make([]byte, 0, n)
	b = append(b, outboxV1)
	b = appendString(b, m.Subject)
	b = appendString(b, m.MsgID)
	b = binary.AppendUvarint(b, uint64(len(m.Header)))
	for k, v := range m.Header {
		b = appendString(appendString(b, k), v)
	}
	return append(b, m.Payload...)
}

func decodeOutbox(b []byte) (OutboxMessage, error) {
	var m OutboxMessage
	if len(b) == 0 || b[0] != outboxV1 {
		return m, errors.New("outbox entry: unknown format")
	}
	b = b[1:]
	var ok bool
	if m.Subject, b, ok = readString(b); !ok {
		return m, errors.New("outbox entry: truncated subject")
	}
	if m.MsgID, b, ok = readString(b); !ok {
		return m, errors.New("outbox entry: truncated msg id")
	}
	nh, w := binary.Uvarint(b)
	if w <= 0 || nh > uint64(len(b)) {
		return m, errors.New("outbox entry: bad header count")
	}
	b = b[w:]
	if nh > 0 {
		m.Header = make(map[string]string, nh)
	}
	for i := uint64(0); i < nh; i++ {
		var k, v string
		if k, b, ok = readString(b); !ok {
			return m, errors.New("outbox entry: truncated header")
		}
		if v, b, ok = readString(b); !ok {
			return m, errors.New("outbox entry: truncated header")
		}
		m.Header[k] = v
	}
	m.Payload = append([]byte(nil), b...)
	return m, nil
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func readString(b []byte) (string, []byte, bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return "", nil, false
	}
	return string(b[w : w+int(n)]), b[w+int(n):], true
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
		for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			m, err := decodeOutbox(v)
			out = append(out, OutboxEntry{Seq: binary.BigEndian.Uint64(k), OutboxMessage: m, Err: err})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// ForgetOutbox removes published messages with the next commit of any
// write, within 50 ms, or at Close. Until then Outbox still returns them:
// read on from the last seq published. A crash in between publishes them
// again; their Nats-Msg-Id lets JetStream drop the copies.
func (db *DB) ForgetOutbox(seqs ...uint64) {
	if len(seqs) > 0 {
		db.forget(seqs...)
	}
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

// NextOutbox returns up to max queued messages not handed out yet, oldest
// first, waiting up to wait for a commit that queues some.
func (db *DB) NextOutbox(ctx context.Context, max int, wait time.Duration) ([]OutboxEntry, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		db.relayMu.Lock()
		after := db.relayAfter
		db.relayMu.Unlock()
		all, err := db.Outbox(ctx, after, max)
		if err != nil {
			return nil, err
		}
		entries := all[:0]
		for _, e := range all {
			if !db.isGone(e.Seq) {
				entries = append(entries, e)
			}
		}
		if len(all) > 0 && len(entries) == 0 {
			// All published, deletion pending: read on past them.
			db.relayMu.Lock()
			if db.relayAfter == after {
				db.relayAfter = all[len(all)-1].Seq
			}
			db.relayMu.Unlock()
			continue
		}
		if len(entries) > 0 {
			db.relayMu.Lock()
			if db.relayAfter == after {
				db.relayAfter = entries[len(entries)-1].Seq
			}
			db.relayMu.Unlock()
			return entries, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-db.outboxReady:
		case <-timer.C:
			return nil, nil
		}
	}
}

// Published forgets what was published (deleted with the next commit of
// any write) and hands out again, from the first of them, what was not.
// A copy published twice carries the same Nats-Msg-Id: JetStream drops it.
func (db *DB) Published(_ context.Context, done, failed []OutboxEntry) {
	seqs := make([]uint64, 0, len(done))
	for _, e := range done {
		seqs = append(seqs, e.Seq)
	}
	db.ForgetOutbox(seqs...)
	if len(failed) == 0 {
		return
	}
	first := failed[0].Seq
	for _, e := range failed {
		first = min(first, e.Seq)
	}
	db.relayMu.Lock()
	db.relayAfter = min(db.relayAfter, first-1)
	db.relayMu.Unlock()
}
