package natskv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

const (
	kvOperation = "KV-Operation"
	kvDelete    = "DEL"
	kvPurge     = "PURGE"
	// maxMultiGet is the most subjects the server answers in one direct
	// batch get.
	maxMultiGet = 1024
	readTimeout = 5 * time.Second
)

// entry is what one subject holds: its revision (the subject's last
// stream sequence, 0 when it holds nothing) and, unless the last message
// is a removal or expiry marker, its value.
type entry struct {
	rev     uint64
	val     []byte
	present bool
}

// isMarker reports a message that says its key is gone: a KV delete or
// purge, or the server's marker for a key removed by its TTL.
func isMarker(h nats.Header) bool {
	if len(h) == 0 {
		return false
	}
	op := h.Get(kvOperation)
	return op == kvDelete || op == kvPurge || h.Get(jetstream.MarkerReasonHeader) != ""
}

// read returns the last message of each subject in one direct batch get
// (ADR-31), which the server answers from one consistent point of the
// stream. A subject that holds nothing has the zero entry.
func (s *Store) read(ctx context.Context, subjects ...string) (map[string]entry, error) {
	out := make(map[string]entry, len(subjects))
	subjects = slices.Compact(slices.Sorted(slices.Values(subjects)))
	for rest := subjects; len(rest) > 0; {
		n := min(len(rest), maxMultiGet)
		if err := s.get(ctx, rest[:n], func(subj string, e entry) { out[subj] = e }); err != nil {
			return nil, err
		}
		rest = rest[n:]
	}
	for _, subj := range subjects {
		if _, ok := out[subj]; !ok {
			out[subj] = entry{} // holds nothing: known too
		}
		s.cache.note(subj, out[subj])
	}
	return out, nil
}

// get asks for the last messages of subjects (which may hold wildcards)
// and hands each to found.
func (s *Store) get(ctx context.Context, subjects []string, found func(string, entry)) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, readTimeout)
		defer cancel()
	}
	s.trips.Add(1)
	msgs, err := jetstreamext.GetLastMsgsFor(ctx, s.js, s.stream, subjects)
	if err != nil {
		return err
	}
	for m, err := range msgs {
		if errors.Is(err, jetstreamext.ErrNoMessages) {
			return nil
		}
		if err != nil {
			return err
		}
		found(m.Subject, entry{rev: m.Sequence, val: m.Data, present: !isMarker(m.Header)})
	}
	return nil
}

// confirm re-reads from the stream's leader each subject the entries say
// holds nothing, and returns the entries with what the leader said. A
// direct get may be answered by a replica that has not applied a write
// another bridge just made (a bind on bridge A, then an event for that
// user on bridge B); an absence that becomes an outcome (not_bound) or a
// refusal (a command for a user "not bound") is confirmed first. Presence
// needs no confirming: nothing is ever un-written but by a newer write.
func (s *Store) confirm(ctx context.Context, got map[string]entry, subjects ...string) error {
	for _, subj := range subjects {
		if got[subj].present {
			continue
		}
		e, err := s.leaderRead(ctx, subj)
		if err != nil {
			return err
		}
		if e.rev > got[subj].rev {
			got[subj] = e
			s.cache.note(subj, e)
		}
	}
	return nil
}

// leaderRead reads subject's last message through the JetStream API,
// which the stream's leader answers (direct gets, which any current
// replica answers, are what read uses).
func (s *Store) leaderRead(ctx context.Context, subject string) (entry, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, readTimeout)
		defer cancel()
	}
	s.trips.Add(1)
	req, _ := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{subject})
	msg, err := s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+s.stream, req)
	if err != nil {
		return entry{}, fmt.Errorf("read %s from the leader: %w", subject, err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Seq  uint64 `json:"seq"`
			Hdrs []byte `json:"hdrs"`
			Data []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return entry{}, fmt.Errorf("read %s from the leader: %w", subject, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == errCodeNoMessage:
		return entry{}, nil
	case resp.Error != nil:
		return entry{}, fmt.Errorf("read %s from the leader: %s (%d)", subject, resp.Error.Description, resp.Error.ErrCode)
	case resp.Message == nil:
		return entry{}, fmt.Errorf("read %s from the leader: empty answer", subject)
	}
	var h nats.Header
	if len(resp.Message.Hdrs) > 0 {
		if h, err = nats.DecodeHeadersMsg(resp.Message.Hdrs); err != nil {
			return entry{}, fmt.Errorf("read %s from the leader: headers: %w", subject, err)
		}
	}
	return entry{rev: resp.Message.Seq, val: resp.Message.Data, present: !isMarker(h)}, nil
}

// errCodeNoMessage is JetStream's "no message found" (JSNoMessageFoundErr).
const errCodeNoMessage = 10037

// list returns what the subjects matching filter hold. One direct get
// answers up to maxMultiGet subjects; beyond that the keys are listed
// first (the KV API's key lister) and read in chunks.
func (s *Store) list(ctx context.Context, filter string) (map[string]entry, error) {
	out := map[string]entry{}
	err := s.get(ctx, []string{filter}, func(subj string, e entry) { out[subj] = e })
	if err == nil {
		return out, nil
	}
	if !errors.Is(err, jetstreamext.ErrBatchUnsupported) {
		// The server answers too many subjects with a status the client
		// reports as an unsupported batch get; anything else is an error.
		return nil, err
	}
	kl, err := s.kv.ListKeysFiltered(ctx, s.n.key(filter))
	if err != nil {
		return nil, err
	}
	var subjects []string
	for k := range kl.Keys() {
		subjects = append(subjects, s.n.kv+k)
	}
	return s.read(ctx, subjects...)
}

// cache keeps the newest entry this store read or wrote for each subject,
// so that a write can decide on what it knows without a read (Complete
// after Reserve; Reserve after this store's own last write to the same
// ledger entry, which a lookup made earlier, or a lagging replica, may not
// show yet). It is only ever an assumption (it cannot see a key expire):
// a decision on it is checked by the revisions of the write, or made
// again on fresh reads when it writes nothing.
type cache struct {
	mu  sync.Mutex
	m   map[string]entry
	max int
}

func newCache(max int) *cache { return &cache{m: map[string]entry{}, max: max} }

func (c *cache) get(subj string) (entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[subj]
	return e, ok
}

// note records e unless a newer entry is known.
func (c *cache) note(subj string, e entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[subj]; ok && old.rev > e.rev {
		return
	}
	if e.rev == 0 {
		delete(c.m, subj)
		return
	}
	if len(c.m) >= c.max {
		// Forget an arbitrary eighth: the cache only saves reads.
		n := c.max / 8
		for k := range c.m {
			delete(c.m, k)
			if n--; n <= 0 {
				break
			}
		}
	}
	c.m[subj] = e
}

func (c *cache) drop(subjects ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range subjects {
		delete(c.m, s)
	}
}

// openidCache remembers the openid of (app, user) from earlier lookups, so
// that a lookup can read the user's ledger entry in the same get as the
// binding that confirms it.
type openidCache struct {
	mu  sync.Mutex
	m   map[[2]string]string
	max int
}

func newOpenidCache(max int) *openidCache { return &openidCache{m: map[[2]string]string{}, max: max} }

func (c *openidCache) get(app, user string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[[2]string{app, user}]
}

func (c *openidCache) set(app, user, openid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := [2]string{app, user}
	if openid == "" {
		delete(c.m, k)
		return
	}
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = openid
}

// state is what one write decides on: an entry per subject, each read by
// this operation or, when assumed, taken from the cache, a lookup's
// snapshot or a guess. A decision that writes nothing (and so is checked
// by no revision) is made again on fresh reads if it used an assumption.
type state struct {
	s       *Store
	e       map[string]entry
	assumed map[string]bool
	// fromLeader: read from the stream's leader, not by direct gets, to
	// confirm a decision that writes nothing but an outcome (no credit,
	// suppressed, in doubt) before it stands.
	fromLeader bool
}

func (s *Store) newState() *state {
	return &state{s: s, e: map[string]entry{}, assumed: map[string]bool{}}
}

// assume takes e for subj without reading it.
func (st *state) assume(subj string, e entry) {
	st.e[subj] = e
	st.assumed[subj] = true
}

// need reads the subjects not known yet, in one get.
func (st *state) need(ctx context.Context, subjects ...string) error {
	var missing []string
	for _, subj := range subjects {
		if subj == "" {
			continue
		}
		if _, ok := st.e[subj]; !ok {
			missing = append(missing, subj)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if st.fromLeader {
		for _, subj := range missing {
			e, err := st.s.leaderRead(ctx, subj)
			if err != nil {
				return err
			}
			st.e[subj] = e
			st.s.cache.note(subj, e)
		}
		return nil
	}
	got, err := st.s.read(ctx, missing...)
	if err != nil {
		return fmt.Errorf("read %s: %w", st.s.n.key(missing[0]), err)
	}
	for subj, e := range got {
		st.e[subj] = e
	}
	return nil
}

// usedAssumptions reports whether anything known was assumed, not read.
func (st *state) usedAssumptions() bool { return len(st.assumed) > 0 }

// reset forgets everything: after a conflict every subject is read again.
func (st *state) reset() {
	clear(st.e)
	clear(st.assumed)
}

func (st *state) get(subj string) entry { return st.e[subj] }
