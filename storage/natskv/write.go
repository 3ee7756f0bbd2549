package natskv

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/wxbridge/wxbridge/storage"
)

// Headers of outbox entries: the message to publish travels in them, its
// payload as is.
const (
	hdrSubject = "Wxb-Subject"
	hdrMsgID   = "Wxb-Msg-Id"
	hdrPrefix  = "Wxb-H-"
	hdrKey     = "Wxb-Key"
	hdrDue     = "Wxb-Due"
)

// Server error codes the store acts on (nats-server jetstream_errors).
const (
	codeWrongLastSeq       = 10071 // an expected revision no longer holds
	codeWrongLastSeqHere   = 10164 // ... or another write of the key is in flight (a cluster)
	codeDuplicateInBatch   = 10201 // the batch's Nats-Msg-Id was committed before
	codeDuplicateInProcess = 10158 // ... and is being committed right now
	codeBatchIncomplete    = 10176 // a message of the batch was refused or lost
	codeAtomicInflight     = 10210 // too many batches in flight
	codeBatchInflight      = 10211
	codeMsgTooLarge        = 10054
	codeBatchTooLarge      = 10199
	codeHeaderTooLarge     = 10097
)

const (
	// maxBatch is the server's default limit of messages in one batch.
	maxBatch = 1000
	// maxConflicts bounds how often a write is decided again because
	// another bridge changed what it read.
	maxConflicts = 24
	// transientBudget bounds how long one batch is sent again after a lost
	// acknowledgement or a busy server before the error is returned.
	transientBudget = 10 * time.Second
	writeTimeout    = 5 * time.Second
)

// errConflict: another writer changed a key since it was read.
var errConflict = errors.New("changed by another writer since read")

// errAckLost stands for an acknowledgement that never came.
var errAckLost = errors.New("acknowledgement lost")

// writes is one atomic change: the messages of one batch, each a KV put
// or removal (with the revision it expects, if any), an outbox entry or a
// schedule message.
type writes struct {
	kind string // starts the batch's identity, for whoever reads the stream
	msgs []*nats.Msg
	kv   []kvWrite // one per message
	// seqs are the messages' revisions once committed; nil when the
	// server had committed the batch before (its acknowledgement was lost).
	seqs []uint64
}

type kvWrite struct {
	subj    string
	val     []byte
	present bool
	kv      bool // a key (cached once committed), not an outbox or schedule message
}

func newWrites(kind string) *writes { return &writes{kind: kind} }

func (w *writes) add(m *nats.Msg, kv kvWrite) {
	w.msgs = append(w.msgs, m)
	w.kv = append(w.kv, kv)
}

func keyMsg(subj string, val []byte, ttl time.Duration) *nats.Msg {
	m := nats.NewMsg(subj)
	m.Data = val
	if ttl > 0 {
		m.Header.Set(jetstream.MsgTTLHeader, ttlValue(ttl))
	}
	return m
}

// put writes subj unconditionally; ttl 0 keeps it for ever.
func (w *writes) put(subj string, val []byte, ttl time.Duration) {
	w.add(keyMsg(subj, val, ttl), kvWrite{subj: subj, val: val, present: true, kv: true})
}

// putAt writes subj if it is still at revision rev (0: holds nothing).
func (w *writes) putAt(subj string, val []byte, ttl time.Duration, rev uint64) {
	m := keyMsg(subj, val, ttl)
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	w.add(m, kvWrite{subj: subj, val: val, present: true, kv: true})
}

// putIf writes subj if another subject, other, is still at revision rev.
func (w *writes) putIf(subj string, val []byte, ttl time.Duration, other string, rev uint64) {
	m := keyMsg(subj, val, ttl)
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, other)
	w.add(m, kvWrite{subj: subj, val: val, present: true, kv: true})
}

// del removes subj (a purge marker that itself expires after markerTTL);
// with check, only if it is still at revision rev.
func (w *writes) del(subj string, markerTTL time.Duration, check bool, rev uint64) {
	m := keyMsg(subj, nil, markerTTL)
	m.Header.Set(kvOperation, kvPurge)
	if check {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	}
	w.add(m, kvWrite{subj: subj, kv: true})
}

// outbox queues m for the relay.
func (w *writes) outbox(n names, m storage.OutboxMessage) error {
	if err := validHeaders(m); err != nil {
		return err
	}
	msg := nats.NewMsg(n.outbox(nuid.Next()))
	msg.Data = m.Payload
	msg.Header.Set(hdrSubject, m.Subject)
	if m.MsgID != "" {
		msg.Header.Set(hdrMsgID, m.MsgID)
	}
	for k, v := range m.Header {
		msg.Header.Set(hdrPrefix+k, v)
	}
	w.add(msg, kvWrite{subj: msg.Subject})
	return nil
}

// validHeaders refuses what cannot travel in NATS headers: it would
// corrupt the protocol, and it could never be published anyway.
func validHeaders(m storage.OutboxMessage) error {
	bad := func(s string, key bool) bool {
		return strings.ContainsAny(s, "\r\n") || (key && (s == "" || strings.ContainsAny(s, ": \t")))
	}
	if bad(m.Subject, true) || m.Subject == "" || bad(m.MsgID, false) {
		return fmt.Errorf("%w: outbox message subject %q or msg id cannot be published", storage.ErrInvalid, clip(m.Subject))
	}
	for k, v := range m.Header {
		if bad(k, true) || bad(v, false) {
			return fmt.Errorf("%w: outbox message header %q cannot be published", storage.ErrInvalid, clip(k))
		}
	}
	return nil
}

// rev is the revision a committed write gave subj (0: unknown).
func (w *writes) rev(subj string) uint64 {
	if w.seqs == nil {
		return 0
	}
	for i, k := range w.kv {
		if k.subj == subj {
			return w.seqs[i]
		}
	}
	return 0
}

func (w *writes) keySubjects() []string {
	var out []string
	for _, k := range w.kv {
		if k.kv {
			out = append(out, k.subj)
		}
	}
	return out
}

// ttlValue is a Nats-TTL header value: whole seconds, at least one.
func ttlValue(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// batchID is the identity of one built batch: the same every time it is
// sent again (after a lost acknowledgement), so that the server
// recognises it, and never another write's, this bridge's or another's,
// even one that writes the same bytes (two identical pushes applied at
// once): the server's "already have it" then always means "this very
// batch was committed".
func (s *Store) batchID(w *writes) string {
	h := sha256.Sum256([]byte(s.opts.Owner + "\x00" + nuid.Next()))
	return w.kind + "." + b64.EncodeToString(h[:18])
}

// update decides and commits, deciding again on fresh reads when another
// writer changed what the decision read. decide returns nil when there is
// nothing to write.
func (s *Store) update(ctx context.Context, st *state, decide func() (*writes, error)) error {
	for attempt := 0; ; attempt++ {
		w, err := decide()
		if err != nil || w == nil {
			return err
		}
		err = s.commit(ctx, w)
		if !errors.Is(err, errConflict) || attempt == maxConflicts {
			return err
		}
		s.cache.drop(w.keySubjects()...)
		st.reset()
		if err := sleep(ctx, backoff(attempt, time.Millisecond, 50*time.Millisecond)); err != nil {
			return err
		}
	}
}

// commit writes w atomically: one message alone, several as an atomic
// batch (ADR-50) with one round trip (no flow control). A batch whose
// acknowledgement was lost is sent again as it was: the server recognises
// its Nats-Msg-Id and answers that it has it, so nothing is written twice.
func (s *Store) commit(ctx context.Context, w *writes) error {
	if len(w.msgs) == 0 {
		return nil
	}
	if len(w.msgs) > maxBatch {
		return fmt.Errorf("%w: %d messages in one atomic change (at most %d)", storage.ErrInvalid, len(w.msgs), maxBatch)
	}
	w.msgs[0].Header.Set(jetstream.MsgIDHeader, s.batchID(w))
	start := time.Now()
	for attempt := 0; ; attempt++ {
		seqs, dup, err := s.publish(ctx, w)
		if err == nil {
			if dup {
				w.seqs = nil
				s.cache.drop(w.keySubjects()...)
				return nil
			}
			w.seqs = seqs
			for i, k := range w.kv {
				if k.kv {
					s.cache.note(k.subj, entry{rev: seqs[i], val: k.val, present: k.present})
				}
			}
			return nil
		}
		switch kind := classify(ctx, err); {
		case kind == errConflict:
			return fmt.Errorf("%w: %w", errConflict, err)
		case kind == storage.ErrInvalid:
			return fmt.Errorf("%w: %w", storage.ErrInvalid, err)
		case kind == errAckLost && time.Since(start) < transientBudget:
			if err := sleep(ctx, backoff(attempt, 5*time.Millisecond, 500*time.Millisecond)); err != nil {
				return err
			}
		default:
			return err
		}
	}
}

// publish sends w once. dup: the server had committed it before.
func (s *Store) publish(ctx context.Context, w *writes) (seqs []uint64, dup bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	s.trips.Add(1)
	if len(w.msgs) == 1 {
		ack, err := s.js.PublishMsg(ctx, w.msgs[0])
		if err != nil {
			return nil, isDuplicate(err), ignoreDuplicate(err)
		}
		if s.ackLost() {
			return nil, false, errAckLost
		}
		return []uint64{ack.Sequence}, ack.Duplicate, nil
	}
	select {
	case s.batches <- struct{}{}:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	ack, err := jetstreamext.PublishMsgBatch(ctx, s.js, w.msgs, jetstreamext.BatchFlowControl{AckFirst: false, AckTimeout: writeTimeout})
	<-s.batches
	if err != nil {
		return nil, isDuplicate(err), ignoreDuplicate(err)
	}
	if s.ackLost() {
		return nil, false, errAckLost
	}
	// A batch is stored in consecutive sequences ending at the ack's.
	seqs = make([]uint64, len(w.msgs))
	first := ack.Sequence + 1 - uint64(len(w.msgs))
	for i := range seqs {
		seqs[i] = first + uint64(i)
	}
	return seqs, false, nil
}

// ackLost is the test hook that drops an acknowledgement after the commit.
func (s *Store) ackLost() bool {
	for {
		n := s.hooks.dropAcks.Load()
		if n <= 0 {
			return false
		}
		if s.hooks.dropAcks.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func apiCode(err error) (jetstream.ErrorCode, int, bool) {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return api.ErrorCode, api.Code, true
	}
	return 0, 0, false
}

func isDuplicate(err error) bool {
	code, _, ok := apiCode(err)
	return ok && code == codeDuplicateInBatch
}

func ignoreDuplicate(err error) error {
	if isDuplicate(err) {
		return nil
	}
	return err
}

// classify says what to do about a failed write: errConflict (decide
// again), storage.ErrInvalid (never accepted), errAckLost (send the same
// batch again: it may or may not have been committed, or the server was
// busy) or nil (return it as it is).
func classify(ctx context.Context, err error) error {
	if code, status, ok := apiCode(err); ok {
		switch code {
		case codeWrongLastSeq, codeWrongLastSeqHere:
			return errConflict
		case codeMsgTooLarge, codeBatchTooLarge, codeHeaderTooLarge:
			return storage.ErrInvalid
		case codeDuplicateInProcess, codeBatchIncomplete, codeAtomicInflight, codeBatchInflight:
			return errAckLost
		}
		if status == 503 || status == 429 || status == 408 {
			return errAckLost
		}
		return nil
	}
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return storage.ErrInvalid
	case ctx.Err() != nil:
		return nil
	case errors.Is(err, errAckLost), errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return errAckLost
	}
	return nil
}

func backoff(attempt int, base, most time.Duration) time.Duration {
	d := base << min(attempt, 16)
	if d > most || d <= 0 {
		d = most
	}
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// printable shows a compound key with its NUL separators as "/", clipped.
func printable(k string) string { return clip(strings.ReplaceAll(k, "\x00", "/")) }

func clip(s string) string {
	const most = 160
	if len(s) <= most {
		return s
	}
	return s[:most] + "…"
}
