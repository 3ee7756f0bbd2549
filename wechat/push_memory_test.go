package wechat

import (
	"fmt"
	"testing"
	"time"
)

// An internal test: the bound on the handler's memory cannot be reached
// from outside without tens of thousands of requests.
func TestPushMemoryBounds(t *testing.T) {
	t0 := time.Unix(1763700000, 0)
	m := newPushMemory(time.Minute, 3)
	handle := func(key string, at time.Time) bool { // reports whether Handle would run
		f, leader := m.claim("app", key, at)
		if leader {
			m.finish("app", key, f, nil, at)
		}
		return leader
	}
	for i := range 5 {
		if !handle(fmt.Sprint("k", i), t0) {
			t.Fatalf("k%d: first sight not handled", i)
		}
	}
	if len(m.entries) != 3 {
		t.Fatalf("%d entries, want the cap of 3", len(m.entries))
	}
	if handle("k4", t0) || handle("k3", t0) || handle("k2", t0) {
		t.Error("a remembered key was handled again")
	}
	if !handle("k0", t0) {
		t.Error("the oldest key, dropped at the cap, was not handled again")
	}

	m = newPushMemory(time.Minute, 100)
	handle("old", t0)
	if handle("old", t0.Add(time.Minute)) {
		t.Error("handled again within the ttl")
	}
	if !handle("old", t0.Add(time.Minute+time.Second)) {
		t.Error("not forgotten after the ttl")
	}
	if len(m.entries) != 1 {
		t.Errorf("%d entries after expiry, want 1", len(m.entries))
	}

	// Many expiries compact the queue instead of growing it forever.
	m = newPushMemory(time.Second, 1<<20)
	for i := range 5000 {
		handle(fmt.Sprint("k", i), t0.Add(time.Duration(i)*time.Second))
	}
	if len(m.order)-m.head > 3 || len(m.order) > 2100 {
		t.Errorf("queue %d long with head %d for %d live entries", len(m.order), m.head, len(m.entries))
	}
}

func TestBindSignature(t *testing.T) {
	t0 := time.Unix(1763700000, 0)
	m := newPushMemory(time.Minute, 100)
	q := map[string][]string{"timestamp": {"1"}, "nonce": {"2"}, "signature": {"s"}}
	first := m.bindSignature("app", q, "msg1", t0)
	again := m.bindSignature("app", q, "msg1", t0) // a WeChat retry of the same push
	if !first || !again {
		t.Error("the same message under its own signature refused")
	}
	if m.bindSignature("app", q, "msg2", t0) {
		t.Error("another message under a used signature accepted")
	}
	if !m.bindSignature("other", q, "msg2", t0) {
		t.Error("signatures of different apps collide")
	}
}
