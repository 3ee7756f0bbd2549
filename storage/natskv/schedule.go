package natskv

import (
	"context"
	"errors"
	"fmt"

	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/storage"
)

// The quiet-hours schedule is the server's (ADR-51): a deferred send is a
// message on <prefix>.sched.<send key> saying "@at <due>", which the
// server publishes to <prefix>.due.<send key> when it comes due. Every
// bridge fetches from one durable consumer on the due subjects, so each
// due send is handed to one of them; the server keeps time, no bridge's
// clock is compared with another's.

// Defer writes the deferred record and its schedule message in one batch.
func (s *Store) Defer(ctx context.Context, rec storage.SendRecord, due time.Time, payload []byte) (bool, error) {
	if err := s.check(); err != nil {
		return false, err
	}
	defer s.userLock(rec)()
	recSubj := s.n.send(rec.Key)
	st := s.newState()
	var ok bool
	err := s.update(ctx, st, func() (*writes, error) {
		if err := st.need(ctx, recSubj); err != nil {
			return nil, err
		}
		var cur storage.SendRecord
		found, err := decodeRecord(st.get(recSubj), &cur)
		if err != nil {
			return nil, err
		}
		next, save := storage.DecideDefer(cur, found, rec, s.now())
		if ok = save; !save {
			return nil, nil
		}
		w := newWrites("d")
		w.putAt(recSubj, storage.MarshalRecord(&next), 0, st.get(recSubj).rev)
		w.add(s.scheduleMsg(rec.Key, due, payload), kvWrite{subj: s.n.sched(rec.Key)})
		return w, nil
	})
	if err != nil {
		return false, fmt.Errorf("defer send %s: %w", printable(rec.Key), err)
	}
	return ok, nil
}

// scheduleMsg asks the server to publish payload to the send's due
// subject at due. The key and due time travel in headers, which the
// server copies to the message it publishes.
func (s *Store) scheduleMsg(key string, due time.Time, payload []byte) *nats.Msg {
	m := nats.NewMsg(s.n.sched(key))
	m.Data = payload
	m.Header.Set("Nats-Schedule", "@at "+due.UTC().Format(time.RFC3339Nano))
	m.Header.Set("Nats-Schedule-Target", s.n.due(key))
	m.Header.Set(hdrKey, b64.EncodeToString([]byte(key)))
	m.Header.Set(hdrDue, due.UTC().Format(time.RFC3339Nano))
	return m
}

// WaitDue returns up to max deferred sends that came due, waiting up to
// wait for one. Each is this bridge's until Settle (or DueAckWait).
func (s *Store) WaitDue(ctx context.Context, max int, wait time.Duration) ([]storage.Deferred, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	msgs, err := fetch(ctx, s.dueC, max, wait)
	if err != nil {
		return nil, fmt.Errorf("read the schedule: %w", err)
	}
	out := make([]storage.Deferred, 0, len(msgs))
	for _, m := range msgs {
		d := storage.Deferred{Payload: m.Data(), Handle: m}
		key, kerr := b64.DecodeString(m.Headers().Get(hdrKey))
		due, derr := time.Parse(time.RFC3339Nano, m.Headers().Get(hdrDue))
		if kerr != nil || derr != nil {
			// Not a message this store wrote: nothing can run it.
			s.opts.Logger.Error("unreadable due message dropped", "subject", m.Subject())
			_ = m.Term()
			continue
		}
		d.Key, d.Due = string(key), due
		out = append(out, d)
	}
	return out, nil
}

// Settle takes a deferred send off the schedule (next zero) or moves it:
// a new schedule message, then the due message is acknowledged. A crash
// in between runs it twice, which its send record makes harmless.
func (s *Store) Settle(ctx context.Context, d storage.Deferred, next time.Time) error {
	if err := s.check(); err != nil {
		return err
	}
	if !next.IsZero() {
		w := newWrites("t")
		w.add(s.scheduleMsg(d.Key, next, d.Payload), kvWrite{subj: s.n.sched(d.Key)})
		if err := s.commit(ctx, w); err != nil {
			return fmt.Errorf("reschedule send %s: %w", printable(d.Key), err)
		}
	}
	m, ok := d.Handle.(jetstream.Msg)
	if !ok {
		// Not handed out by WaitDue: take its schedule message away.
		if next.IsZero() {
			if err := s.purge(ctx, s.n.sched(d.Key), 0); err != nil {
				return fmt.Errorf("settle send %s: %w", printable(d.Key), err)
			}
		}
		return nil
	}
	if err := m.DoubleAck(ctx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		return fmt.Errorf("settle send %s: %w", printable(d.Key), err)
	}
	s.acked.Store(true)
	return nil
}

// fetch takes up to max messages from a consumer shared with other
// bridges, waiting up to wait for the first. It never leaves a pull
// request open for messages it would not hand out.
func fetch(ctx context.Context, c jetstream.Consumer, max int, wait time.Duration) ([]jetstream.Msg, error) {
	if max <= 0 {
		return nil, nil
	}
	out, err := drain(c.FetchNoWait(max))
	if err != nil || len(out) > 0 || wait <= 0 {
		return out, err
	}
	// Nothing yet: wait for one, then take what else is there.
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	first, err := drain(c.Fetch(1, jetstream.FetchContext(wctx)))
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = nil
	}
	if err != nil || len(first) == 0 {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if max == 1 {
		return first, nil
	}
	rest, err := drain(c.FetchNoWait(max - 1))
	return append(first, rest...), err
}

func drain(b jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var out []jetstream.Msg
	for m := range b.Messages() {
		out = append(out, m)
	}
	if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
		return out, err
	}
	return out, nil
}
