package natskv_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/natskv"
)

// Several bridges starting at once on a fresh bucket all open it.
func TestConcurrentOpens(t *testing.T) {
	bucket := newBucket()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := srv.Connect()
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			c, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			s, err := natskv.Open(c, nc, natskv.Options{Bucket: bucket})
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		}()
	}
	wg.Wait()
}

// A bucket an operator made with `nats kv add` gains what the store needs
// (its subjects, atomic batches, schedules, TTLs) and keeps its keys.
func TestOpenUpgradesAPlainBucket(t *testing.T) {
	bucket := newBucket()
	nc := connect(t, srv.Connect)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "operator.note", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	s := open(t, nc, natskv.Options{Bucket: bucket})
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if !cfg.AllowAtomicPublish || !cfg.AllowMsgSchedules || !cfg.AllowMsgTTL || cfg.SubjectDeleteMarkerTTL == 0 ||
		!slices.Contains(cfg.Subjects, "$WXB."+bucket+".outbox.>") || !slices.Contains(cfg.Subjects, "$KV."+bucket+".>") {
		t.Fatalf("upgraded stream %+v", cfg)
	}
	if e, err := kv.Get(ctx, "operator.note"); err != nil || string(e.Value()) != "kept" {
		t.Fatalf("the operator's key: %v", err)
	}
	if _, err := s.Reserve(ctx, pendingReq(s, "e1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, storage.OutboxMessage{Subject: "a"}, storage.OutboxMessage{Subject: "b"}); err != nil {
		t.Fatal(err)
	}
}
