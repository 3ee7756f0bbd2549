package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
)

// Metadata keys the event unmarshaler sets on every watermill message.
const (
	mdSubject   = "wxbridge-subject"
	mdStreamSeq = "wxbridge-stream-seq"
	mdDelivered = "wxbridge-delivered"
	mdMsgID     = "wxbridge-nats-msg-id"
	mdPublished = "wxbridge-published"
	mdHeaderErr = "wxbridge-header-error"
)

// eventUnmarshaler turns a JetStream delivery into a watermill message. It
// never fails: watermill-nats returns without acking or nacking when an
// unmarshaler fails, which with ManualAck means endless redelivery of a
// message nobody ever looks at. Problems are recorded in metadata and the
// handler sends such events to the dead-letter subject.
type eventUnmarshaler struct {
	deliveries *deliveries
}

func (u eventUnmarshaler) Unmarshal(m *nats.Msg) (*message.Message, error) {
	md := message.Metadata{mdSubject: m.Subject}
	for k, vs := range m.Header {
		switch {
		case k == nats.MsgIdHdr:
			md.Set(mdMsgID, vs[0])
		case len(vs) == 1:
			md.Set(k, vs[0])
		default:
			md.Set(k, strings.Join(vs, ","))
			md.Set(mdHeaderErr, fmt.Sprintf("header %q has %d values", k, len(vs)))
		}
	}
	uuid := watermill.NewUUID()
	if meta, err := m.Metadata(); err == nil {
		md.Set(mdStreamSeq, strconv.FormatUint(meta.Sequence.Stream, 10))
		md.Set(mdDelivered, strconv.FormatUint(meta.NumDelivered, 10))
		md.Set(mdPublished, meta.Timestamp.UTC().Format(time.RFC3339Nano))
		uuid = fmt.Sprintf("%d.%d", meta.Sequence.Stream, meta.NumDelivered)
	}
	msg := message.NewMessage(uuid, m.Data)
	msg.Metadata = md
	u.deliveries.put(uuid, m)
	return msg, nil
}

// deliveries lets a handler reach the JetStream message behind a watermill
// message, to tell the server it is still working on a long fan-out
// (InProgress). Acks and naks stay with watermill.
type deliveries struct{ m sync.Map }

func (d *deliveries) put(uuid string, m *nats.Msg) { d.m.Store(uuid, m) }

func (d *deliveries) take(uuid string) *nats.Msg {
	v, ok := d.m.LoadAndDelete(uuid)
	if !ok {
		return nil
	}
	return v.(*nats.Msg)
}

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

// nakDelay is the subscriber's redelivery delay: the backoff, except for
// events refused because the bridge is shutting down. Those must stay away
// until the subscription is closed: one pushed back to a closing
// subscription is abandoned by watermill without a nak and waits out the
// whole ack wait. Delivered again after drainNak, they reach the next
// process (or another bridge) soon enough.
type nakDelay struct {
	backoff
	draining func() bool
}

const drainNak = 5 * time.Second

func (d nakDelay) WaitTime(n uint64) time.Duration {
	if d.draining() {
		return drainNak
	}
	return d.backoff.WaitTime(n)
}

// consumeEvents starts the watermill router on the bound durable consumer.
// It returns a function that stops it.
func (b *Bridge) consumeEvents() (stop func(), err error) {
	conn, err := b.cfg.Connect()
	if err != nil {
		return nil, fmt.Errorf("connect event subscriber: %w", err)
	}
	wlog := newWatermillLogger(b.log.With("component", "watermill"))
	dl := &deliveries{}
	hb := &heartbeats{msgs: map[*nats.Msg]struct{}{}}
	// SubscribersCount: the server hands each event to a random member of
	// the queue group and a member takes one event at a time, so with one
	// member per in-flight slot a third of the slots sit idle while events
	// queue behind busy members (64 slots, WeChat at 100 ms: 353 sends/s
	// of 640). Eight times as many members keep all but a few slots busy
	// (560/s); MaxAckPending still bounds the events in flight to
	// MaxInFlight. Capped, since every member is a subscription.
	members := max(b.cfg.MaxInFlight, min(8*b.cfg.MaxInFlight, 1024))
	sub, err := wmnats.NewSubscriberWithNatsConn(conn, wmnats.SubscriberSubscriptionConfig{
		Unmarshaler:      eventUnmarshaler{deliveries: dl},
		SubscribersCount: members,
		QueueGroupPrefix: b.cfg.Consumer,
		AckWaitTimeout:   b.cfg.AckWait,
		CloseTimeout:     5 * time.Second,
		SubscribeTimeout: 30 * time.Second,
		NakDelay:         nakDelay{backoff{b.cfg.RetryBase, b.cfg.RetryMax}, b.handlers.shut},
		JetStream: wmnats.JetStreamConfig{
			// The default, AckSync, waits for the server to confirm the ack.
			AckAsync:      false,
			DurablePrefix: b.cfg.Consumer,
			// Bind: use the consumer provision created, never create (and
			// on close delete) one. ManualAck: without it nats.go acks every
			// message the callback returns from, including the ones
			// watermill gives up on at shutdown.
			SubscribeOptions: []nats.SubOpt{nats.Bind(b.cfg.EventStream, b.cfg.Consumer), nats.ManualAck()},
		},
	}, wlog)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("event subscriber: %w", err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: b.cfg.ShutdownGrace}, wlog)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("router: %w", err)
	}
	router.AddConsumerHandler("events", b.cfg.EventSubjects[0], sub, func(msg *message.Message) error {
		return b.handleDelivery(msg, dl, hb)
	})
	ctx, cancel := context.WithCancel(context.Background())
	beatDone := make(chan struct{})
	go func() {
		defer close(beatDone)
		hb.run(ctx, b.cfg.AckWait/3, b.log)
	}()
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case err := <-runErr:
		cancel()
		<-beatDone
		conn.Close()
		return nil, fmt.Errorf("start router: %w", err)
	}
	return func() {
		if err := router.Close(); err != nil {
			b.log.Warn("router close", "err", err)
		}
		cancel()
		if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
			b.log.Warn("router stopped", "err", err)
		}
		<-beatDone
		conn.Close()
	}, nil
}

// errDraining nacks events that arrive after shutdown began; they are
// redelivered to this or another bridge.
var errDraining = errors.New("bridge is shutting down")

// errInFlight nacks a redelivery of an event this process is still handling
// (its ack wait ran out while a long fan-out was in progress).
var errInFlight = errors.New("event is already being handled")

func (b *Bridge) handleDelivery(msg *message.Message, dl *deliveries, hb *heartbeats) error {
	jm := dl.take(msg.UUID)
	if !b.handlers.enter() {
		b.lastRefusal.Store(time.Now().UnixNano())
		return errDraining
	}
	defer b.handlers.leave()
	b.metrics.inFlight.Inc()
	defer b.metrics.inFlight.Dec()
	// Sends finish even when the subscriber's context ends at shutdown:
	// an interrupted WeChat call would leave its recipient in doubt.
	ctx := context.WithoutCancel(msg.Context())
	stopBeat := hb.start(jm)
	defer stopBeat()
	return b.handleEvent(ctx, msg)
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
