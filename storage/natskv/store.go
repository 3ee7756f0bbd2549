package natskv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/internal/jsapi"
	"github.com/wxbridge/wxbridge/storage"
)

// Options configure Open.
type Options struct {
	// Bucket names the KV bucket (stream KV_<Bucket>). Default "wxbridge".
	Bucket string
	// Replicas of the bucket's stream when this store creates it: 1 on one
	// server, 3 on a cluster. Default 1.
	Replicas int
	// Prefix starts the subjects of the outbox and the schedule, which
	// live in the bucket's stream beside the keys. Default "$WXB.<Bucket>".
	Prefix string
	// Owner names this bridge in the pending records it writes and in its
	// lease. Default: random, new for every Open.
	Owner string
	// LeaseTTL is how long this bridge's liveness key outlives its last
	// renewal (whole seconds). Default 10s; it is renewed every third of it.
	LeaseTTL time.Duration
	// Retention is how long the server keeps final send records, event
	// marks and msgid index entries (Sends, default 30 days), and push
	// dedupe keys and early delivery reports (Pushes, default 1 day).
	Retention storage.Retention
	// MarkerTTL is how long a removed or expired key leaves its marker
	// (the stream's LimitMarkerTTL). Default 15 minutes.
	MarkerTTL time.Duration
	// DuplicateWindow is the stream's window for Nats-Msg-Id, within which
	// a batch sent again after its acknowledgement was lost is recognised.
	// Default 2 minutes.
	DuplicateWindow time.Duration
	// MaxBatches bounds the atomic batches this store has in flight; the
	// server allows 50 per stream (all bridges together). Default 16.
	MaxBatches int
	// OutboxAckWait is how long an outbox entry handed to a relay waits
	// for Published before another relay gets it. Default 10s.
	OutboxAckWait time.Duration
	// DueAckWait is how long a due deferred send handed out by WaitDue
	// waits for Settle before another bridge gets it. Default 1 minute.
	DueAckWait time.Duration
	// LedgerHook announces every ledger change through the outbox.
	LedgerHook storage.LedgerHook
	// Now is the clock decisions are made on. Default time.Now. Leases
	// never use it: they are measured on the local monotonic clock.
	Now    func() time.Time
	Logger *slog.Logger
}

var bucketName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

func (o *Options) setDefaults() {
	if o.Bucket == "" {
		o.Bucket = "wxbridge"
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Prefix == "" {
		o.Prefix = "$WXB." + o.Bucket
	}
	if o.Owner == "" {
		var id [8]byte
		_, _ = rand.Read(id[:])
		o.Owner = hex.EncodeToString(id[:])
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 10 * time.Second
	}
	o.LeaseTTL = o.LeaseTTL.Round(time.Second)
	if o.Retention.Sends <= 0 {
		o.Retention.Sends = 30 * 24 * time.Hour
	}
	if o.Retention.Pushes <= 0 {
		o.Retention.Pushes = 24 * time.Hour
	}
	if o.MarkerTTL <= 0 {
		o.MarkerTTL = 15 * time.Minute
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = 2 * time.Minute
	}
	if o.MaxBatches <= 0 {
		o.MaxBatches = 16
	}
	if o.OutboxAckWait <= 0 {
		o.OutboxAckWait = 10 * time.Second
	}
	if o.DueAckWait <= 0 {
		o.DueAckWait = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports options that cannot work.
func (o *Options) Validate() error {
	switch {
	case !bucketName.MatchString(o.Bucket):
		return fmt.Errorf("bucket %q: only letters, digits, _ and - are allowed", o.Bucket)
	case o.LeaseTTL < time.Second:
		return fmt.Errorf("lease TTL %s: at least 1s", o.LeaseTTL)
	case o.MarkerTTL < time.Second:
		return fmt.Errorf("marker TTL %s: at least 1s", o.MarkerTTL)
	case o.Retention.Sends < time.Second || o.Retention.Pushes < time.Second:
		return errors.New("retention: at least 1s")
	}
	return nil
}

// Store is wxbridge's state in one JetStream KV bucket, shared by every
// bridge that opens the same bucket. Safe for concurrent use.
type Store struct {
	opts    Options
	nc      *nats.Conn
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	stream  string
	n       names
	outboxC jetstream.Consumer
	dueC    jetstream.Consumer

	batches chan struct{} // a slot per batch in flight
	locks   [256]sync.Mutex
	cache   *cache
	openids *openidCache

	leaseMu  sync.Mutex
	leaseAt  time.Time // when the last successful renewal was sent (monotonic)
	leaseErr error     // why the last renewal failed

	handedMu sync.Mutex
	handed   map[uint64]jetstream.Msg // outbox entries handed out, by stream sequence
	acked    atomic.Bool              // entries acked since the last purge

	hooks testHooks
	trips atomic.Int64 // requests answered by the server: reads and commits

	closeOnce sync.Once
	closed    atomic.Bool
	stop      context.CancelFunc // ends housekeeping
	wg        sync.WaitGroup
}

// testHooks are set only by the package's tests (export_test.go).
type testHooks struct {
	noRenew  atomic.Bool  // renewals stop, as if the bridge had died
	dropAcks atomic.Int32 // acknowledgements of the next commits are lost
}

// Open provisions the bucket (idempotently: several bridges may start at
// once), its consumers, and this bridge's lease. The connection stays the
// caller's.
func Open(ctx context.Context, nc *nats.Conn, opts Options) (*Store, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("open KV store: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open KV store %s: %w", opts.Bucket, err)
	}
	s := &Store{opts: opts, nc: nc, js: js, stream: "KV_" + opts.Bucket, n: newNames(opts.Bucket, opts.Prefix),
		batches: make(chan struct{}, opts.MaxBatches), cache: newCache(16384), openids: newOpenidCache(4096),
		handed: map[uint64]jetstream.Msg{}}
	if err := s.provision(ctx); err != nil {
		return nil, fmt.Errorf("open KV store %s: %w", opts.Bucket, err)
	}
	if err := s.renew(ctx); err != nil {
		return nil, fmt.Errorf("open KV store %s: take a lease: %w", opts.Bucket, err)
	}
	hctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.wg.Add(1)
	go s.housekeeping(hctx)
	return s, nil
}

// streamConfig is a KV bucket's stream (as nats.go's KeyValue makes it,
// so that `nats kv` and the KV API read the keys) with what the store
// needs besides: atomic batches, per-message TTLs with markers, message
// schedules, and the outbox and schedule subjects.
func (s *Store) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              s.stream,
		Description:       "wxbridge state",
		Subjects:          s.subjects(),
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          s.opts.Replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        s.opts.DuplicateWindow,
		AllowDirect:       true,
		// Message schedules refuse DiscardNew (the KV default); with no
		// limits but one message per key, DiscardOld behaves the same.
		Discard:                jetstream.DiscardOld,
		AllowMsgTTL:            true,
		SubjectDeleteMarkerTTL: s.opts.MarkerTTL,
		AllowAtomicPublish:     true,
		AllowMsgSchedules:      true,
	}
}

func (s *Store) subjects() []string {
	return []string{s.n.kv + ">", s.n.outboxAll(), s.n.schedAll(), s.n.dueAll()}
}

// provision creates the stream, or adds what an existing bucket lacks. A
// plain CreateOrUpdateKeyValue would reset the stream's subjects.
func (s *Store) provision(ctx context.Context) error {
	// Several bridges starting at once on a fresh cluster race to create
	// the same stream and consumers, and some requests go unanswered:
	// each is tried again (jsapi.Retry).
	want := s.streamConfig()
	err := jsapi.Retry(ctx, "create stream "+s.stream, func(ctx context.Context) error {
		_, err := s.js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// It exists: another bridge made it (perhaps an instant ago, or
			// an older version), or an operator with `nats kv add`.
			return s.upgradeStream(ctx, want)
		}
		return err
	})
	if err != nil {
		return err
	}
	err = jsapi.Retry(ctx, "bind bucket "+s.opts.Bucket, func(ctx context.Context) error {
		kv, err := s.js.KeyValue(ctx, s.opts.Bucket)
		s.kv = kv
		return err
	})
	if err != nil {
		return err
	}
	consumer := func(what string, cfg jetstream.ConsumerConfig) (c jetstream.Consumer, err error) {
		err = jsapi.Retry(ctx, "create "+what+" consumer", func(ctx context.Context) error {
			c, err = s.js.CreateOrUpdateConsumer(ctx, s.stream, cfg)
			return err
		})
		return c, err
	}
	if s.outboxC, err = consumer("outbox", jetstream.ConsumerConfig{
		Durable: s.opts.Bucket + "_outbox", Description: "wxbridge outbox relay, shared by every bridge",
		FilterSubject: s.n.outboxAll(), AckPolicy: jetstream.AckExplicitPolicy, AckWait: s.opts.OutboxAckWait,
		MaxDeliver: -1, MaxAckPending: 8192, MaxRequestBatch: 1024,
	}); err != nil {
		return err
	}
	if s.dueC, err = consumer("schedule", jetstream.ConsumerConfig{
		Durable: s.opts.Bucket + "_due", Description: "wxbridge deferred sends that came due, shared by every bridge",
		FilterSubject: s.n.dueAll(), AckPolicy: jetstream.AckExplicitPolicy, AckWait: s.opts.DueAckWait,
		MaxDeliver: -1, MaxAckPending: 4096, MaxRequestBatch: 1024,
	}); err != nil {
		return err
	}
	return nil
}

// upgradeStream adds to an existing stream the subjects and features the
// store needs, leaving the operator's other choices (replicas, limits).
func (s *Store) upgradeStream(ctx context.Context, want jetstream.StreamConfig) error {
	for attempt := 0; ; attempt++ {
		st, err := s.js.Stream(ctx, s.stream)
		if err != nil {
			return fmt.Errorf("read stream %s: %w", s.stream, err)
		}
		cfg := st.CachedInfo().Config
		changed := false
		for _, subj := range want.Subjects {
			if !slices.Contains(cfg.Subjects, subj) {
				cfg.Subjects = append(cfg.Subjects, subj)
				changed = true
			}
		}
		for _, f := range []*bool{&cfg.AllowAtomicPublish, &cfg.AllowMsgSchedules, &cfg.AllowMsgTTL, &cfg.AllowDirect, &cfg.AllowRollup} {
			if !*f {
				*f, changed = true, true
			}
		}
		if cfg.Discard != jetstream.DiscardOld && cfg.MaxBytes < 0 && cfg.MaxMsgs < 0 {
			cfg.Discard, changed = jetstream.DiscardOld, true
		}
		if cfg.SubjectDeleteMarkerTTL == 0 {
			cfg.SubjectDeleteMarkerTTL, changed = want.SubjectDeleteMarkerTTL, true
		}
		if cfg.MaxMsgsPerSubject < 1 {
			return fmt.Errorf("stream %s is not a KV bucket (max messages per subject %d)", s.stream, cfg.MaxMsgsPerSubject)
		}
		if cfg.Replicas != want.Replicas {
			s.opts.Logger.Warn("state bucket has another replica count than asked; kept", "stream", s.stream,
				"replicas", cfg.Replicas, "asked", want.Replicas)
		}
		if !changed {
			return nil
		}
		if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
			if attempt < 3 {
				continue // another bridge updated it meanwhile: look again
			}
			return fmt.Errorf("update stream %s: %w", s.stream, err)
		}
		return nil
	}
}

// Owner names this bridge in the pending records it writes.
func (s *Store) Owner() string { return s.opts.Owner }

// Lease is nil while this bridge's liveness key is surely current: its
// last successful renewal was sent less than LeaseTTL minus a margin ago,
// on this machine's monotonic clock. No other machine's clock is read.
func (s *Store) Lease() error {
	s.leaseMu.Lock()
	at, cause := s.leaseAt, s.leaseErr
	s.leaseMu.Unlock()
	if age := time.Since(at); age > s.opts.LeaseTTL-s.leaseMargin() {
		if cause != nil {
			return fmt.Errorf("lease of %s not renewed for %s: %w", s.opts.Owner, age.Round(time.Millisecond), cause)
		}
		return fmt.Errorf("lease of %s not renewed for %s", s.opts.Owner, age.Round(time.Millisecond))
	}
	return nil
}

// leaseMargin covers what happens between Lease and the WeChat call it
// allows (a reservation's round trip) and the server's expiry accuracy.
func (s *Store) leaseMargin() time.Duration { return s.opts.LeaseTTL / 5 }

// renew writes the liveness key with the server's TTL.
func (s *Store) renew(ctx context.Context) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, max(s.opts.LeaseTTL/3, time.Second))
	defer cancel()
	m := nats.NewMsg(s.n.lease(s.opts.Owner))
	m.Data = []byte(start.UTC().Format(time.RFC3339Nano))
	m.Header.Set(jetstream.MsgTTLHeader, ttlValue(s.opts.LeaseTTL))
	_, err := s.js.PublishMsg(ctx, m)
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if err != nil {
		s.leaseErr = err
		return err
	}
	if start.After(s.leaseAt) {
		s.leaseAt, s.leaseErr = start, nil
	}
	return nil
}

// housekeeping renews the lease and purges what the relays and the
// schedule acknowledged, until ctx ends (Close).
func (s *Store) housekeeping(ctx context.Context) {
	defer s.wg.Done()
	renew := time.NewTicker(s.opts.LeaseTTL / 3)
	defer renew.Stop()
	purge := time.NewTicker(time.Second)
	defer purge.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			if s.hooks.noRenew.Load() {
				continue
			}
			if err := s.renew(ctx); err != nil && ctx.Err() == nil {
				s.opts.Logger.Warn("renew lease; will retry", "owner", s.opts.Owner, "err", err)
			}
		case <-purge.C:
			if err := s.purgeAcked(ctx); err != nil && ctx.Err() == nil {
				s.opts.Logger.Warn("purge relayed outbox entries; will retry", "err", err)
			}
		}
	}
}

// Close stops the lease (removing it, so that other bridges need not wait
// for it to expire) and the housekeeping. The connection stays open.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.stop()
		s.wg.Wait()
		if s.hooks.noRenew.Load() {
			return // a bridge that died removes nothing
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		m := nats.NewMsg(s.n.lease(s.opts.Owner))
		m.Header.Set(kvOperation, kvPurge)
		m.Header.Set(jetstream.MsgTTLHeader, ttlValue(s.opts.MarkerTTL))
		if _, err := s.js.PublishMsg(ctx, m); err != nil {
			s.opts.Logger.Warn("remove lease at close", "owner", s.opts.Owner, "err", err)
		}
	})
	return nil
}

// check refuses work after Close.
func (s *Store) check() error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	return nil
}

// Ping reports whether the state can be read.
func (s *Store) Ping() error {
	if err := s.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.read(ctx, s.n.lease(s.opts.Owner)); err != nil {
		return fmt.Errorf("read bucket %s: %w", s.opts.Bucket, err)
	}
	return nil
}

// Expire has nothing to do: the server expires keys by their TTL.
func (s *Store) Expire(context.Context, storage.Retention) (storage.ExpireStats, error) {
	return storage.ExpireStats{}, nil
}

// LegacyIDsBefore is zero: this backend never held records of the event
// identity older versions used.
func (s *Store) LegacyIDsBefore() time.Time { return time.Time{} }

func (s *Store) now() time.Time { return s.opts.Now().UTC() }

// lock serialises this store's writes to one user's state (or one key),
// so that its own goroutines do not conflict with each other: conflicts
// are left to other bridges.
func (s *Store) lock(parts ...string) func() {
	h := fnv.New32a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	m := &s.locks[h.Sum32()%uint32(len(s.locks))]
	m.Lock()
	return m.Unlock
}

// userLock is the lock of a send's recipient.
func (s *Store) userLock(rec storage.SendRecord) func() {
	if rec.OpenID == "" {
		return s.lock("send", rec.Key)
	}
	return s.lock(rec.App, rec.OpenID)
}
