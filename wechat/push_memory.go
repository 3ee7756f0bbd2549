package wechat

import (
	"net/url"
	"sync"
	"time"
)

// defaultPushMemoryEntries bounds the memory of handled pushes and used
// signatures. Past it the oldest are forgotten early, which only hands a
// late retry to Handle's own idempotency.
const defaultPushMemoryEntries = 1 << 16

// pushMemory is what a PushHandler remembers for a while: pushes handled
// successfully, pushes in flight, and which message each plaintext-mode
// signature vouched for. Only verified requests get in, so a forger cannot
// fill it.
type pushMemory struct {
	ttl time.Duration
	max int

	mu       sync.Mutex
	inflight map[string]*pushFlight
	entries  map[string]memoEntry
	order    []memoKey // insertion order, for expiry; order[head:] is live
	head     int
}

type memoEntry struct {
	at    time.Time
	value string
}

type memoKey struct {
	key string
	at  time.Time
}

// pushFlight is one running Handle call; done is closed when err is set.
type pushFlight struct {
	done chan struct{}
	err  error
}

func newPushMemory(ttl time.Duration, max int) *pushMemory {
	return &pushMemory{
		ttl:      ttl,
		max:      max,
		inflight: map[string]*pushFlight{},
		entries:  map[string]memoEntry{},
	}
}

func handledKey(app, key string) string { return "push\x00" + app + "\x00" + key }

// claim returns (nil, false) if the push was handled recently; the running
// flight and false if it is in flight; a new flight and true if the caller
// is to run Handle and then call finish.
func (m *pushMemory) claim(app, key string, now time.Time) (*pushFlight, bool) {
	k := handledKey(app, key)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire(now)
	if _, ok := m.entries[k]; ok {
		return nil, false
	}
	if f, ok := m.inflight[k]; ok {
		return f, false
	}
	f := &pushFlight{done: make(chan struct{})}
	m.inflight[k] = f
	return f, true
}

func (m *pushMemory) finish(app, key string, f *pushFlight, err error, now time.Time) {
	k := handledKey(app, key)
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.inflight, k)
	if err == nil {
		m.put(k, "", now)
	}
	f.err = err
	close(f.done)
}

// bindSignature records that a three-part signature (GET or plaintext POST)
// vouched for the message with this dedupe key. It reports false if the
// same signature already vouched for something else: a retry or replay of
// the same message is fine (DedupeKey takes care of it), a different body
// under a captured signature is a forgery.
func (m *pushMemory) bindSignature(app string, q url.Values, key string, now time.Time) bool {
	k := "sig\x00" + app + "\x00" + q.Get("timestamp") + "\x00" + q.Get("nonce") + "\x00" + q.Get("signature")
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire(now)
	if e, ok := m.entries[k]; ok {
		return e.value == key
	}
	m.put(k, key, now)
	return true
}

func (m *pushMemory) put(k, value string, now time.Time) {
	m.entries[k] = memoEntry{at: now, value: value}
	m.order = append(m.order, memoKey{key: k, at: now})
	for len(m.entries) > m.max && m.head < len(m.order) {
		m.pop()
	}
}

// expire forgets entries older than ttl. The order is by insertion, and the
// clock may be injected and non-monotonic, so it stops at the first young one.
func (m *pushMemory) expire(now time.Time) {
	for m.head < len(m.order) && now.Sub(m.order[m.head].at) > m.ttl {
		m.pop()
	}
}

func (m *pushMemory) pop() {
	if m.head >= len(m.order) {
		return
	}
	o := m.order[m.head]
	m.order[m.head] = memoKey{}
	m.head++
	// A key put twice is queued twice; only its last queue entry removes it.
	if e, ok := m.entries[o.key]; ok && e.at.Equal(o.at) {
		delete(m.entries, o.key)
	}
	if m.head > len(m.order)/2 && m.head > 1024 {
		m.order = append([]memoKey(nil), m.order[m.head:]...)
		m.head = 0
	}
}
