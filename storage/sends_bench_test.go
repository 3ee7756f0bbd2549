package storage_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/storage"
)

// BenchmarkReserveComplete is the state one send costs, as the bridge pays
// for it: Reserve (read the record, consume a one-time credit from the
// ledger, announce the ledger change, write the pending record) and
// Complete (write the outcome and queue its result), on a real file with
// fsync, from 64 concurrent senders sharing group commits, as 64 events in
// flight would.
func BenchmarkReserveComplete(b *testing.B) {
	ctx := context.Background()
	hook := func(s storage.Subscription) []storage.OutboxMessage {
		payload, _ := json.Marshal(s)
		h := sha256.Sum256(payload)
		return []storage.OutboxMessage{{Subject: "wxbridge.subscriptions.main", MsgID: "s:" + hex.EncodeToString(h[:16]), Payload: payload}}
	}
	db, err := storage.Open(filepath.Join(b.TempDir(), "wxbridge.db"), storage.Options{LedgerHook: hook})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const users = 1000
	openid := func(u int) string { return fmt.Sprintf("oBench-u%d", u) }
	for u := range users {
		if _, err := db.Bind(ctx, storage.Binding{App: "main", UserID: fmt.Sprintf("u%d", u), OpenID: openid(u)}); err != nil {
			b.Fatal(err)
		}
	}
	// Every send takes a credit: grant enough, from concurrent callers as
	// the command handlers would. Accepts reported an hour ago no longer
	// wait for their popup twin, so the ledger entry stays its usual size.
	grants := users * (b.N/users + 1)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < grants; i = int(next.Add(1)) - 1 {
				if _, err := db.ApplySubscription(ctx, storage.SubscriptionChange{App: "main", OpenID: openid(i % users), TemplateID: "TPL",
					Status: storage.StatusAccept, Kind: storage.KindOneTime, Source: storage.SourceClient, At: time.Now().Add(-time.Hour)}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var seq atomic.Int64
	build := func(rec storage.SendRecord) []storage.OutboxMessage {
		payload, _ := json.Marshal(rec)
		return []storage.OutboxMessage{{Subject: "wxbridge.results.bench.notice", MsgID: "r:" + rec.Key, Payload: payload}}
	}
	b.ResetTimer()
	b.SetParallelism(32) // with GOMAXPROCS 2: 64 senders
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			u := int(i % users)
			rec := storage.SendRecord{Key: storage.SendKey(fmt.Sprintf("e%d", i), "notice-to-user", fmt.Sprintf("u:u%d", u)),
				EventID: fmt.Sprintf("e%d", i), EventType: "bench.notice", Rule: "notice-to-user", App: "main", TemplateID: "TPL",
				UserID: fmt.Sprintf("u%d", u), OpenID: openid(u)}
			res, err := db.Reserve(ctx, storage.ReserveRequest{Record: rec, Owner: "bench", CheckCredit: true,
				Kind: storage.KindOneTime, ResendInDoubt: true})
			if err != nil {
				b.Error(err)
				return
			}
			if res.Outcome != storage.Reserved {
				b.Errorf("reserve %s: outcome %d (%s)", rec.Key, res.Outcome, res.Reason)
				return
			}
			done := res.Record
			done.State, done.MsgID, done.ErrMsg = storage.StateSent, "1864323726461255681", "ok"
			if _, _, err := db.Complete(ctx, done, storage.KeepCredit, build); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sends/s")
}
