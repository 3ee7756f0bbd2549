package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
)

// backoff is the redelivery delay after the n-th delivery failed:
// exponential from base, capped, with ±20% jitter so that events that failed
// together do not come back together.
type backoff struct{ base, max time.Duration }

func (d backoff) WaitTime(n uint64) time.Duration {
	if n < 1 {
		n = 1
	}
	w := d.base
	for i := uint64(1); i < n && w < d.max; i++ {
		w *= 2
	}
	w = min(w, d.max)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(w) * jitter)
}

// consumer is the running event intake: the watermill router on the pull
// subscriber.
type consumer struct {
	sub    *pullSubscriber
	router *message.Router
	cancel context.CancelFunc
	runErr chan error
	beat   chan struct{} // closed when the heartbeat loop ended
}

// consumeEvents starts the watermill router on the durable pull consumer.
func (b *Bridge) consumeEvents() (*consumer, error) {
	wlog := newWatermillLogger(b.log.With("component", "watermill"))
	sub := newPullSubscriber(pullConfig{Conn: b.cfg.Conn, Stream: b.cfg.EventStream, Consumer: b.cfg.Consumer,
		Max: b.cfg.MaxInFlight, NakDelay: backoff{b.cfg.RetryBase, b.cfg.RetryMax}.WaitTime, Logger: b.log.With("component", "pull")})
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: b.cfg.ShutdownGrace}, wlog)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	hb := &heartbeats{msgs: map[*nats.Msg]struct{}{}}
	router.AddConsumerHandler("events", b.cfg.EventSubjects[0], sub, func(msg *message.Message) error {
		// The router's goroutine per message only waits: the work runs on
		// a long-lived worker (see workers).
		done := make(chan error, 1)
		b.eventWorkers.do(func() { done <- b.handleDelivery(msg, hb) })
		return <-done
	})
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{sub: sub, router: router, cancel: cancel, runErr: make(chan error, 1), beat: make(chan struct{})}
	go func() {
		defer close(c.beat)
		hb.run(ctx, b.cfg.AckWait/3, b.log)
	}()
	go func() { c.runErr <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case err := <-c.runErr:
		cancel()
		<-c.beat
		return nil, fmt.Errorf("start router: %w", err)
	}
	return c, nil
}

// stopPulling asks for no more events and waits (until ctx ends) for the
// requests already out to run out, giving back what they still bring.
func (c *consumer) stopPulling(ctx context.Context) { c.sub.Stop(ctx) }

// stop closes the router and the subscriber; events still held are given
// back to the server.
func (c *consumer) stop(log *slog.Logger) {
	if err := c.router.Close(); err != nil {
		log.Warn("router close", "err", err)
	}
	c.cancel()
	if err := <-c.runErr; err != nil && !errors.Is(err, context.Canceled) {
		log.Warn("router stopped", "err", err)
	}
	<-c.beat
	_ = c.sub.Close()
}

// errDraining nacks events that arrive after shutdown began; they are
// redelivered to this or another bridge.
var errDraining = errors.New("bridge is shutting down")

// errInFlight nacks a redelivery of an event this process is still handling
// (its ack wait ran out while a long fan-out was in progress).
var errInFlight = errors.New("event is already being handled")

func (b *Bridge) handleDelivery(msg *message.Message, hb *heartbeats) error {
	d := deliveryOf(msg)
	if d == nil {
		return errors.New("message without a JetStream delivery")
	}
	if !b.handlers.enter() {
		d.retryAfter = -1 // at once: this bridge asks for nothing more
		return errDraining
	}
	defer b.handlers.leave()
	b.metrics.inFlight.Inc()
	defer b.metrics.inFlight.Dec()
	// Sends finish even when the subscriber's context ends at shutdown:
	// an interrupted WeChat call would leave its recipient in doubt.
	ctx := context.WithoutCancel(msg.Context())
	stopBeat := hb.start(d.msg)
	defer stopBeat()
	return b.handleEvent(ctx, d)
}

// heartbeats tells the server, every AckWait/3, that the events being
// handled are still being worked on, so a long fan-out is not redelivered to
// another handler half-way. One goroutine beats for every event in flight:
// a goroutine and a ticker per event cost more than the beats themselves.
type heartbeats struct {
	mu   sync.Mutex // held while beating, so that none follows a stop
	msgs map[*nats.Msg]struct{}
}

// start beats for m until stop is called; after stop returns, no beat for
// m is sent (one after a nak would reset its redelivery delay).
func (hb *heartbeats) start(m *nats.Msg) (stop func()) {
	if m == nil {
		return func() {}
	}
	hb.mu.Lock()
	hb.msgs[m] = struct{}{}
	hb.mu.Unlock()
	return func() {
		hb.mu.Lock()
		delete(hb.msgs, m)
		hb.mu.Unlock()
	}
}

// run sends the heartbeats every interval until ctx ends. An event gets
// its first beat at most one interval after it started, as it would with a
// ticker of its own.
func (hb *heartbeats) run(ctx context.Context, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hb.mu.Lock()
		for m := range hb.msgs {
			if err := m.InProgress(); err != nil {
				log.Debug("in-progress heartbeat", "err", err)
			}
		}
		hb.mu.Unlock()
	}
}
