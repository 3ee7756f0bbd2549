package natskv_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxbridge/wxbridge/internal/embednats"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/natskv"
)

// BenchmarkReserveComplete is storage's benchmark of the same name on this
// backend (R1, the embedded server, a file store): Reserve spending a
// one-time credit with its ledger announcement, then Complete queueing the
// result, from 64 concurrent senders.
func BenchmarkReserveComplete(b *testing.B) { benchSends(b, r1, false) }

// BenchmarkRecipient is what the bridge pays per recipient of a
// one-recipient event: Lookup (handing its snapshot to Reserve), Reserve,
// and CompleteEvent marking the event done.
func BenchmarkRecipient(b *testing.B) { benchSends(b, r1, true) }

// BenchmarkRecipientR3 is BenchmarkRecipient on an R3 bucket of a
// three-node cluster, all in this process (so on this machine's cores).
func BenchmarkRecipientR3(b *testing.B) {
	c, err := embednats.StartCluster(embednats.ClusterOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Shutdown()
	benchSends(b, func(b *testing.B, opts natskv.Options) *natskv.Store {
		opts.Replicas = 3
		return open(b, connect(b, func(o ...nats.Option) (*nats.Conn, error) { return nats.Connect(c.URLs()[0], o...) }), opts)
	}, true)
}

func r1(b *testing.B, opts natskv.Options) *natskv.Store {
	return open(b, connect(b, srv.Connect), opts)
}

func benchSends(b *testing.B, openStore func(*testing.B, natskv.Options) *natskv.Store, lookup bool) {
	hook := func(s storage.Subscription) []storage.OutboxMessage {
		payload, _ := json.Marshal(s)
		h := sha256.Sum256(payload)
		return []storage.OutboxMessage{{Subject: "wxbridge.subscriptions.main", MsgID: "s:" + hex.EncodeToString(h[:16]), Payload: payload}}
	}
	s := openStore(b, natskv.Options{Bucket: newBucket(), LedgerHook: hook})
	const users = 1000
	openid := func(u int) string { return fmt.Sprintf("oBench-u%d", u) }
	for u := range users {
		if _, err := s.Bind(ctx, storage.Binding{App: "main", UserID: fmt.Sprintf("u%d", u), OpenID: openid(u)}); err != nil {
			b.Fatal(err)
		}
	}
	grants := users * (b.N/users + 1)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < grants; i = int(next.Add(1)) - 1 {
				if _, err := s.ApplySubscription(ctx, storage.SubscriptionChange{App: "main", OpenID: openid(i % users), TemplateID: "TPL",
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
	trips := s.RoundTrips()
	b.ResetTimer()
	b.SetParallelism(32) // with GOMAXPROCS 2: 64 senders
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			u := int(i % users)
			event := fmt.Sprintf("e%d", i)
			rec := storage.SendRecord{Key: storage.SendKey(event, "notice-to-user", fmt.Sprintf("u:u%d", u)),
				EventID: event, EventType: "bench.notice", Rule: "notice-to-user", App: "main", TemplateID: "TPL",
				UserID: fmt.Sprintf("u%d", u), OpenID: openid(u)}
			req := storage.ReserveRequest{Record: rec, Owner: s.Owner(), CheckCredit: true, Kind: storage.KindOneTime, ResendInDoubt: true}
			complete := s.Complete
			if lookup {
				f, err := s.Lookup(ctx, storage.Lookup{EventKey: event, SendKey: rec.Key, App: "main", UserID: rec.UserID, TemplateID: "TPL"})
				if err != nil || !f.Bound {
					b.Errorf("lookup %s: %v", rec.Key, err)
					return
				}
				req.Snapshot = f.Snapshot
				complete = s.CompleteEvent
			}
			res, err := s.Reserve(ctx, req)
			if err != nil {
				b.Error(err)
				return
			}
			if res.Outcome != storage.Reserved {
				b.Errorf("reserve %s: outcome %d (%s)", rec.Key, res.Outcome, res.Reason)
				return
			}
			done := res.Record
			done.State, done.MsgID, done.ErrMsg = storage.StateSent, fmt.Sprint(1864323726461255681+i), "ok"
			if _, _, err := complete(ctx, done, storage.KeepCredit, build); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sends/s")
	b.ReportMetric(float64(s.RoundTrips()-trips)/float64(b.N), "trips/send")
}
