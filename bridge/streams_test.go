package bridge

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxbridge/wxbridge/internal/embednats"
)

// Three bridges starting at the same moment on a fresh three-node cluster
// all provision their streams and consumers: the settling cluster leaves
// some of the racing requests unanswered (without the retries every run
// timed out), and each is tried again.
func TestProvisionConcurrentlyOnAFreshCluster(t *testing.T) {
	c, err := embednats.StartCluster(embednats.ClusterOptions{N: 3, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	took := make([]time.Duration, 3)
	for i, url := range c.URLs() {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		cfg := Config{Conn: nc, Replicas: 3, Registry: prometheus.NewRegistry()}
		cfg.setDefaults()
		b := &Bridge{cfg: cfg}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			errs[i] = b.provision(context.Background())
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("bridge %d: %v", i, err)
		}
	}
	t.Logf("provisioned in %v", took)
}

// An older wxbridge's push consumer is replaced by the pull consumer, which
// starts after its ack floor: nothing unacked is lost, and a later start
// leaves the pull consumer as it is.
func TestProvisionReplacesAnOlderPushConsumer(t *testing.T) {
	_, nc := embednats.ForTest(t)
	cfg := Config{Conn: nc, Registry: prometheus.NewRegistry()}
	cfg.setDefaults()
	b := &Bridge{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	old, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.AddStream(&nats.StreamConfig{Name: cfg.EventStream, Subjects: cfg.EventSubjects}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := old.Publish("events.order.created", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	// Round 1's consumer: push, acked up to the fourth event, the fifth
	// delivered and never acked (a bridge that stopped while handling it).
	if _, err := old.AddConsumer(cfg.EventStream, &nats.ConsumerConfig{Durable: cfg.Consumer, DeliverSubject: "wxbridge.deliver",
		AckPolicy: nats.AckExplicitPolicy, MaxAckPending: 5}); err != nil {
		t.Fatal(err)
	}
	sub, err := nc.SubscribeSync("wxbridge.deliver")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if i <= 4 {
			if err := m.AckSync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = sub.Unsubscribe()

	for start := range 2 {
		if err := b.provision(ctx); err != nil {
			t.Fatalf("start %d: %v", start, err)
		}
		info, err := old.ConsumerInfo(cfg.EventStream, cfg.Consumer)
		if err != nil {
			t.Fatal(err)
		}
		if c := info.Config; c.DeliverSubject != "" || c.DeliverPolicy != nats.DeliverByStartSequencePolicy || c.OptStartSeq != 5 {
			t.Fatalf("start %d: consumer %+v; want a pull consumer from stream sequence 5", start, c)
		}
		if info.NumPending != 6 {
			t.Fatalf("start %d: %d events pending, want 6 (5 to 10)", start, info.NumPending)
		}
	}
}
