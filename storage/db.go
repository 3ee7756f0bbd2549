package storage

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout this code reads and writes. Open refuses a
// database written by a newer version and migrates an older one.
//
// Version 2 (wxbridge with CloudEvents identified by source and id) records
// when a version-1 database was upgraded: events published before then keep
// their old identity (see LegacyIDsBefore).
const SchemaVersion = 2

var (
	bucketMeta      = []byte("meta")
	bucketBindings  = []byte("bindings") // user \x00 app -> Binding
	bucketOpenIDs   = []byte("openids")  // app \x00 openid -> user
	bucketTokens    = []byte("tokens")   // key -> token
	bucketSends     = []byte("sends")    // send key -> SendRecord
	bucketSendsTime = []byte("sends_by_time")
	bucketMsgIDs    = []byte("msgids")   // msgid -> send key
	bucketEvents    = []byte("events")   // event id -> EventRecord
	bucketOutbox    = []byte("outbox")   // seq -> OutboxMessage
	bucketLedger    = []byte("ledger")   // app \x00 openid \x00 template -> Subscription
	bucketRoles     = []byte("roles")    // role \x00 scope \x00 user -> RoleGrant
	bucketUserRoles = []byte("uroles")   // user \x00 role \x00 scope -> RoleGrant
	bucketCallbacks = []byte("pushes")   // callback dedupe key -> seen at
	bucketSchedule  = []byte("schedule") // due time + send key -> deferred work
	bucketDedupe    = []byte("dedupe")   // rule dedupe key -> reserved at
	bucketCaps      = []byte("caps")     // cap key \x00 time \x00 send key
	bucketPushTime  = []byte("pushes_by_time")
	bucketOrphans   = []byte("orphans")   // msgid -> delivery report that came before its send record
	bucketFollowers = []byte("followers") // official account \x00 openid -> Follower
	bucketUnionIDs  = []byte("unionids")  // "f" \x00 account \x00 unionid -> openid; "b" \x00 unionid \x00 app \x00 user -> binding key

	allBuckets = [][]byte{bucketMeta, bucketBindings, bucketOpenIDs, bucketTokens, bucketSends, bucketSendsTime,
		bucketMsgIDs, bucketEvents, bucketOutbox, bucketLedger, bucketRoles, bucketUserRoles, bucketCallbacks, bucketSchedule,
		bucketDedupe, bucketCaps, bucketPushTime, bucketOrphans, bucketFollowers, bucketUnionIDs}

	keySchema    = []byte("schema_version")
	keyLegacyIDs = []byte("legacy_ids_before")
)

// ErrLocked means another process has the database open.
var ErrLocked = errors.New("database is locked by another process (is another wxbridge running?)")

// Options configure Open.
type Options struct {
	// LockTimeout is how long Open waits for the file lock. Default 2s.
	LockTimeout time.Duration
	// NoSync skips fsync: only for tests and benchmarks of code above storage.
	NoSync bool
	// Linger is how long a commit waits for more writers to join it.
	Linger time.Duration
	// LedgerHook announces every ledger change through the outbox.
	LedgerHook LedgerHook
	Now        func() time.Time
}

// DB is wxbridge's state in one bbolt file. Safe for concurrent use.
//
// Writes from concurrent goroutines share transactions: a writer goroutine
// commits everything that queued while the previous commit ran, so hundreds
// of concurrent sends pay for a few fsyncs, not hundreds.
type DB struct {
	bolt        *bolt.DB
	now         func() time.Time
	ledgerHook  LedgerHook
	outboxReady chan struct{}
	outboxSeq   uint64 // writer goroutine only

	// Published outbox entries are deleted by the next commit of any write
	// (or after lazyDelay), not by a commit of their own: at a steady
	// trickle of events that commit was a third of all of them.
	linger time.Duration

	lazyMu sync.Mutex
	lazy   []uint64
	// gone holds published entries until the commit that deletes them: the
	// relay must not hand them out again meanwhile.
	gone     map[uint64]struct{}
	lazyKick chan struct{}
	writes   chan *write
	done     chan struct{}
	wg       sync.WaitGroup

	mu     sync.RWMutex // held for reading while queueing a write
	closed bool

	owner        string        // this process incarnation, in pending records
	scheduleWake chan struct{} // signalled when a send is deferred
	relayMu      sync.Mutex
	relayAfter   uint64 // outbox entries up to here were handed out
}

type write struct {
	fn  func(*bolt.Tx) error
	err chan error
}

// Open opens or creates the database at path.
func Open(path string, opts Options) (*DB, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, NoSync: opts.NoSync,
		// Every commit would otherwise write the free-page list too; it is
		// rebuilt by a scan when the file is opened instead.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Growing the map makes every transaction wait; start big enough
		// (address space, not memory) that a busy day does not remap.
		InitialMmapSize: 256 << 20,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	db := &DB{bolt: b, now: opts.Now, ledgerHook: opts.LedgerHook, outboxReady: make(chan struct{}, 1), lazyKick: make(chan struct{}, 1), linger: opts.Linger,
		writes: make(chan *write, 4096), done: make(chan struct{}), owner: hex.EncodeToString(id[:]), scheduleWake: make(chan struct{}, 1)}
	if err := b.Update(db.migrate); err != nil {
		b.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.wg.Add(1)
	go db.writer()
	return db, nil
}

func (db *DB) migrate(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(keySchema)
	switch {
	case v == nil:
		return meta.Put(keySchema, u64(SchemaVersion))
	case binary.BigEndian.Uint64(v) > SchemaVersion:
		return fmt.Errorf("schema version %d is newer than this wxbridge understands (%d)", binary.BigEndian.Uint64(v), SchemaVersion)
	case binary.BigEndian.Uint64(v) == 1:
		// Events already in the stream were recorded under their id alone.
		if err := meta.Put(keyLegacyIDs, u64(uint64(db.now().UnixNano()))); err != nil {
			return err
		}
		return meta.Put(keySchema, u64(SchemaVersion))
	}
	return nil
}

// LegacyIDsBefore is when this database was upgraded from schema version
// 1: CloudEvents published before then were recorded under their id alone,
// and must keep that identity so a redelivery finds their records. Zero for
// a database created by this version.
func (db *DB) LegacyIDsBefore() time.Time {
	var t time.Time
	_ = db.view(func(tx *bolt.Tx) error {
		t = timeOf(tx.Bucket(bucketMeta).Get(keyLegacyIDs))
		return nil
	})
	return t
}

// Close waits for queued writes and closes the file.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	db.mu.Unlock()
	close(db.done)
	db.wg.Wait()
	return db.bolt.Close()
}

// Ping reports whether the database can be read.
func (db *DB) Ping() error {
	db.mu.RLock()
	closed := db.closed
	db.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	return db.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return errors.New("meta bucket missing")
		}
		return nil
	})
}

// Owner names this process incarnation in the pending records it writes.
// One process holds the database (its file lock), so a pending record of
// another incarnation was left by one that died.
func (db *DB) Owner() string { return db.owner }

// Lease is always current: no other process can take this database's
// pending records while it holds the file.
func (db *DB) Lease() error { return nil }

// Path is the file the database lives in.
func (db *DB) Path() string { return db.bolt.Path() }

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("storage: database closed")

// update runs fn in a read-write transaction shared with other concurrent
// writers. fn may run more than once (when a transaction it shared failed
// because of another writer), so it must not have effects outside tx.
func (db *DB) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	w := &write{fn: fn, err: make(chan error, 1)}
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return ErrClosed
	}
	select {
	case db.writes <- w:
	case <-ctx.Done():
		db.mu.RUnlock()
		return ctx.Err()
	}
	db.mu.RUnlock()
	// Once queued, the write will run: wait for it even if ctx ends, so the
	// caller never mistakes a committed write for a failed one.
	err := <-w.err
	if errors.Is(err, bolterrors.ErrKeyTooLarge) || errors.Is(err, bolterrors.ErrValueTooLarge) || errors.Is(err, bolterrors.ErrKeyRequired) {
		// The same input fails the same way every time.
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return err
}

func (db *DB) view(fn func(*bolt.Tx) error) error { return db.bolt.View(fn) }

const maxGroup = 512

// lazyDelay bounds how long published outbox entries wait for a commit to
// ride along with.
const lazyDelay = 50 * time.Millisecond

func (db *DB) writer() {
	defer db.wg.Done()
	group := make([]*write, 0, maxGroup)
	lazyTimer := time.NewTimer(time.Hour)
	lazyTimer.Stop()
	armed := false
	for {
		group = group[:0]
		select {
		case w := <-db.writes:
			group = append(group, w)
		case <-db.lazyKick:
			if !armed {
				lazyTimer.Reset(lazyDelay)
				armed = true
			}
			continue
		case <-lazyTimer.C:
			// Nothing else to ride along with: delete them on their own.
			armed = false
		case <-db.done:
			// Close holds off new writes before it closes done, so what is
			// queued now is all there will be.
			for len(db.writes) > 0 {
				group = append(group, <-db.writes)
			}
			db.commit(group)
			return
		}
		if len(group) > 0 && db.linger > 0 {
			// Let writers arriving within the linger share this commit: at a
			// steady trickle, commits (two fdatasyncs each) were most of the
			// bridge's CPU.
			time.Sleep(db.linger)
		}
	fill:
		for len(group) < maxGroup {
			select {
			case w := <-db.writes:
				group = append(group, w)
			default:
				break fill
			}
		}
		db.commit(group)
	}
}

// commit runs a group in one transaction. If any function fails, the group
// is rolled back and each function is retried in a transaction of its own so
// that one bad write does not fail its neighbours.
func (db *DB) commit(group []*write) {
	dels := db.takeLazy()
	if len(group) == 0 && len(dels) == 0 {
		return
	}
	var failed bool
	var seq uint64
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		for _, w := range group {
			if err := w.fn(tx); err != nil {
				failed = true
				return err
			}
		}
		ob := tx.Bucket(bucketOutbox)
		for _, d := range dels {
			if err := ob.Delete(u64(d)); err != nil {
				return err
			}
		}
		// Read here rather than in a transaction of its own after every
		// commit.
		seq = ob.Sequence()
		return nil
	})
	if err != nil && len(dels) > 0 {
		db.forget(dels...) // deletes are idempotent: try them with the next commit
	}
	if err == nil {
		db.deleted(dels)
		db.wakeOutbox(seq)
		for _, w := range group {
			w.err <- nil
		}
		return
	}
	defer db.signalOutbox()
	if !failed || len(group) == 1 {
		for _, w := range group {
			w.err <- err
		}
		return
	}
	for _, w := range group {
		w.err <- db.bolt.Update(w.fn)
	}
}

// deleted says a commit removed these entries.
func (db *DB) deleted(seqs []uint64) {
	if len(seqs) == 0 {
		return
	}
	db.lazyMu.Lock()
	for _, s := range seqs {
		delete(db.gone, s)
	}
	db.lazyMu.Unlock()
}

// isGone reports an entry published and waiting for its deletion.
func (db *DB) isGone(seq uint64) bool {
	db.lazyMu.Lock()
	defer db.lazyMu.Unlock()
	_, ok := db.gone[seq]
	return ok
}

func (db *DB) takeLazy() []uint64 {
	db.lazyMu.Lock()
	defer db.lazyMu.Unlock()
	d := db.lazy
	db.lazy = nil
	return d
}

// forget queues published outbox entries for deletion with the next commit.
func (db *DB) forget(seqs ...uint64) {
	db.lazyMu.Lock()
	db.lazy = append(db.lazy, seqs...)
	if db.gone == nil {
		db.gone = map[uint64]struct{}{}
	}
	for _, s := range seqs {
		db.gone[s] = struct{}{}
	}
	db.lazyMu.Unlock()
	select {
	case db.lazyKick <- struct{}{}:
	default:
	}
}

// signalOutbox wakes the outbox publisher if the last commits queued
// messages.
func (db *DB) signalOutbox() {
	var seq uint64
	_ = db.bolt.View(func(tx *bolt.Tx) error {
		seq = tx.Bucket(bucketOutbox).Sequence()
		return nil
	})
	db.wakeOutbox(seq)
}

// wakeOutbox wakes the outbox publisher if the outbox sequence moved to
// seq since it last looked.
func (db *DB) wakeOutbox(seq uint64) {
	if seq == db.outboxSeq {
		return
	}
	db.outboxSeq = seq
	select {
	case db.outboxReady <- struct{}{}:
	default:
	}
}

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// key joins parts with NUL, which no id contains, so prefixes are exact.
func key(parts ...string) []byte {
	n := len(parts)
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return b
}

func prefix(parts ...string) []byte { return append(key(parts...), 0) }

func getJSON(b *bolt.Bucket, k []byte, v any) (bool, error) {
	data := b.Get(k)
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("decode record %q: %w", printable(k), err)
	}
	return true, nil
}

// printable shows a key with its NUL separators as "/".
func printable(k []byte) string {
	out := make([]byte, len(k))
	for i, c := range k {
		if c == 0 {
			c = '/'
		}
		out[i] = c
	}
	return string(out)
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode record %q: %w", printable(k), err)
	}
	return b.Put(k, data)
}
