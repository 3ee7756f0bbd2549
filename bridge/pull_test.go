package bridge

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/internal/embednats"
)

// pullRig is an embedded JetStream with a stream EVENTS and a durable pull
// consumer on it.
type pullRig struct {
	ns   *embednats.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	cons jetstream.Consumer
}

func newPullRig(t *testing.T, maxAckPending int) *pullRig {
	t.Helper()
	ns, nc := embednats.ForTest(t)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{Durable: "wxbridge",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxAckPending: maxAckPending})
	if err != nil {
		t.Fatal(err)
	}
	return &pullRig{ns: ns, nc: nc, js: js, cons: cons}
}

func (r *pullRig) publish(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := r.js.Publish(context.Background(), fmt.Sprintf("events.t.%d", i), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
}

// ackPending samples what the server counts as delivered and not acked.
func (r *pullRig) ackPending(t *testing.T) int {
	t.Helper()
	info, err := r.cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumAckPending
}

// The bridge holds at most MaxInFlight events: the server never counts more
// delivered-and-unacked events than that, however slow the handlers. The
// same load through watermill-nats' pkg/jetstream subscriber, bound to the
// same existing consumer with one subscription per slot and PullMaxMessages
// of one, is measured for comparison (see pullSubscriber for why the bridge
// does not use it).
func TestPullSubscriberHoldsExactBound(t *testing.T) {
	const slots, events = 8, 120
	measure := func(t *testing.T, start func(r *pullRig, handle message.NoPublishHandlerFunc) func()) (peak, requests int) {
		r := newPullRig(t, 10000)
		r.publish(t, events)
		// Count the pull requests the subscriber makes: each is a message
		// to the server and work for it.
		var reqs atomic.Int64
		spy, err := r.nc.Subscribe("$JS.API.CONSUMER.MSG.NEXT.EVENTS.wxbridge", func(*nats.Msg) { reqs.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		defer spy.Unsubscribe()
		var handled atomic.Int64
		release := make(chan struct{})
		stop := start(r, func(m *message.Message) error {
			<-release // slow handlers: everything stays held
			handled.Add(1)
			return nil
		})
		defer stop()
		// Let the subscriber fill what it will hold while handlers block,
		// then let handlers go one at a time and keep sampling.
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && r.ackPending(t) < slots {
			time.Sleep(10 * time.Millisecond)
		}
		for handled.Load() < events && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			peak = max(peak, r.ackPending(t))
			select {
			case release <- struct{}{}:
			case <-time.After(time.Second):
			}
		}
		close(release)
		if handled.Load() < events {
			t.Fatalf("handled %d of %d", handled.Load(), events)
		}
		return peak, int(reqs.Load())
	}

	ours, ourRequests := measure(t, func(r *pullRig, handle message.NoPublishHandlerFunc) func() {
		sub := newPullSubscriber(pullConfig{Conn: r.nc, Stream: "EVENTS", Consumer: "wxbridge", Max: slots})
		router, _ := message.NewRouter(message.RouterConfig{}, nil)
		router.AddConsumerHandler("events", "EVENTS", sub, handle)
		go func() { _ = router.Run(context.Background()) }()
		<-router.Running()
		var once sync.Once
		go func() {
			// The subscriber's own accounting never exceeds the bound either.
			for !router.IsClosed() {
				if h, a := sub.Held(); h+a > slots {
					once.Do(func() { t.Errorf("subscriber holds %d and asked for %d: over %d", h, a, slots) })
				}
				time.Sleep(time.Millisecond)
			}
		}()
		return func() { _ = router.Close() }
	})
	if ours > slots {
		t.Fatalf("the server counted %d events held by the bridge's subscriber, over its %d slots", ours, slots)
	}

	theirs, theirRequests := measure(t, func(r *pullRig, handle message.NoPublishHandlerFunc) func() {
		nc, err := r.ns.Connect()
		if err != nil {
			t.Fatal(err)
		}
		sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{Conn: nc,
			ResourceInitializer: wmjs.ExistingConsumer(func(string, string) jetstream.ConsumerConfig {
				return jetstream.ConsumerConfig{Name: "wxbridge"}
			}, ""),
			ConsumeOptions: []jetstream.PullConsumeOpt{jetstream.PullMaxMessages(1)}})
		if err != nil {
			t.Fatal(err)
		}
		router, _ := message.NewRouter(message.RouterConfig{}, nil)
		for i := 0; i < slots; i++ {
			router.AddConsumerHandler(fmt.Sprintf("events-%d", i), "EVENTS", sub, handle)
		}
		go func() { _ = router.Run(context.Background()) }()
		<-router.Running()
		return func() { _ = router.Close() }
	})
	t.Logf("%d events, %d slots: bridge subscriber held %d at peak with %d pull requests; watermill-nats pkg/jetstream (%d subscriptions, PullMaxMessages 1) held %d with %d pull requests",
		events, slots, ours, ourRequests, slots, theirs, theirRequests)
}

// A subscriber that stops asking gives back what arrives for the requests
// it had out, at once, so another bridge can take it.
func TestPullSubscriberStopGivesBack(t *testing.T) {
	r := newPullRig(t, 10000)
	sub := newPullSubscriber(pullConfig{Conn: r.nc, Stream: "EVENTS", Consumer: "wxbridge", Max: 4, Expires: 2 * time.Second})
	out, err := sub.Subscribe(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// Wait for the request to be out, then stop before any event exists.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, asked := sub.Held(); asked > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no pull request went out")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sub.Stop(ctx)
	}()
	r.publish(t, 3)
	<-stopped
	select {
	case m := <-out:
		t.Fatalf("a stopped subscriber handed out %s", m.UUID)
	default:
	}
	// Everything is back on the server, undelivered or nacked for redelivery.
	other := newPullSubscriber(pullConfig{Conn: r.nc, Stream: "EVENTS", Consumer: "wxbridge", Max: 4})
	out2, err := other.Subscribe(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for i := 0; i < 3; i++ {
		select {
		case m := <-out2:
			m.Ack()
		case <-time.After(20 * time.Second):
			t.Fatalf("got %d of 3 events back", i)
		}
	}
}
