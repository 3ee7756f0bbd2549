package natskv

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/storage"
)

// The outbox is the messages on <prefix>.outbox.<unique>, written in the
// batches of the state changes they announce, the message to publish in
// their headers and payload. Every bridge's relay fetches from one durable
// consumer on them: an entry is handed to one relay at a time, acked once
// published, handed out again if it was not. What the consumer acked is
// purged (at most every second), so the stream keeps only entries not
// yet relayed.

// Enqueue queues messages on their own (in batches of at most maxBatch,
// each atomic).
func (s *Store) Enqueue(ctx context.Context, msgs ...storage.OutboxMessage) error {
	if err := s.check(); err != nil {
		return err
	}
	for len(msgs) > 0 {
		n := min(len(msgs), maxBatch)
		w := newWrites("q")
		for _, m := range msgs[:n] {
			if err := w.outbox(s.n, m); err != nil {
				return fmt.Errorf("queue %d messages: %w", len(msgs), err)
			}
		}
		if err := s.commit(ctx, w); err != nil {
			return fmt.Errorf("queue %d messages: %w", len(msgs), err)
		}
		msgs = msgs[n:]
	}
	return nil
}

// NextOutbox returns up to max entries not handed out, oldest first,
// waiting up to wait for one.
func (s *Store) NextOutbox(ctx context.Context, max int, wait time.Duration) ([]storage.OutboxEntry, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	msgs, err := fetch(ctx, s.outboxC, max, wait)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	out := make([]storage.OutboxEntry, 0, len(msgs))
	s.handedMu.Lock()
	defer s.handedMu.Unlock()
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			_ = m.Term()
			continue
		}
		e := storage.OutboxEntry{Seq: meta.Sequence.Stream}
		h := m.Headers()
		e.Subject, e.MsgID, e.Payload = h.Get(hdrSubject), h.Get(hdrMsgID), m.Data()
		for k, v := range h {
			if name, ok := strings.CutPrefix(k, hdrPrefix); ok && len(v) > 0 {
				if e.Header == nil {
					e.Header = map[string]string{}
				}
				e.Header[name] = v[0]
			}
		}
		if e.Subject == "" {
			e.Err = fmt.Errorf("outbox entry %d has no subject", e.Seq)
		}
		s.handed[e.Seq] = m
		out = append(out, e)
	}
	return out, nil
}

// Published acks what was published and naks what failed, so that a
// relay (this one or another) gets it again at once.
func (s *Store) Published(_ context.Context, done, failed []storage.OutboxEntry) {
	s.handedMu.Lock()
	defer s.handedMu.Unlock()
	for _, e := range done {
		if m, ok := s.handed[e.Seq]; ok {
			delete(s.handed, e.Seq)
			_ = m.Ack()
			s.acked.Store(true)
		}
	}
	for _, e := range failed {
		if m, ok := s.handed[e.Seq]; ok {
			delete(s.handed, e.Seq)
			_ = m.Nak()
		}
	}
}

// purgeAcked removes the outbox entries and due messages below their
// consumers' ack floors, if this store acked any since it last looked.
func (s *Store) purgeAcked(ctx context.Context) error {
	if !s.acked.Swap(false) {
		return nil
	}
	for _, p := range []struct {
		c      jetstream.Consumer
		filter string
	}{{s.outboxC, s.n.outboxAll()}, {s.dueC, s.n.dueAll()}} {
		info, err := p.c.Info(ctx)
		if err != nil {
			s.acked.Store(true)
			return err
		}
		if floor := info.AckFloor.Stream; floor > 0 {
			if err := s.purge(ctx, p.filter, floor+1); err != nil {
				s.acked.Store(true)
				return err
			}
		}
	}
	return nil
}

// purge removes the messages on subject (a filter) below sequence before
// (all of them with 0).
func (s *Store) purge(ctx context.Context, subject string, before uint64) error {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return err
	}
	opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(subject)}
	if before > 0 {
		opts = append(opts, jetstream.WithPurgeSequence(before))
	}
	return st.Purge(ctx, opts...)
}
