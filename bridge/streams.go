package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// provision creates the event stream (if missing), the output stream and
// the durable consumer. An existing event stream belongs to whoever created
// it and is not changed. The consumer is created by the bridge, not by the
// subscription, so closing the subscription never deletes it.
func (b *Bridge) provision(ctx context.Context) error {
	js, err := jetstream.New(b.cfg.Conn)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, b.cfg.EventStream); errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        b.cfg.EventStream,
			Description: "domain events (created by wxbridge)",
			Subjects:    b.cfg.EventSubjects,
			Storage:     jetstream.FileStorage,
			MaxAge:      14 * 24 * time.Hour,
			Duplicates:  2 * time.Minute,
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create stream %s: %w", b.cfg.EventStream, err)
		}
	} else if err != nil {
		return fmt.Errorf("look up stream %s: %w", b.cfg.EventStream, err)
	}

	out := jetstream.StreamConfig{
		Name:        b.cfg.OutputStream,
		Description: "wxbridge results, subscription changes and dead letters",
		Subjects:    []string{b.subject("results.>"), b.subject("subscriptions.>"), b.deadSubject()},
		Storage:     jetstream.FileStorage,
		MaxAge:      b.cfg.OutputMaxAge,
		Duplicates:  2 * time.Minute,
	}
	if _, err := js.CreateOrUpdateStream(ctx, out); err != nil {
		return fmt.Errorf("create stream %s: %w", b.cfg.OutputStream, err)
	}

	_, err = js.CreateOrUpdatePushConsumer(ctx, b.cfg.EventStream, jetstream.ConsumerConfig{
		Durable:        b.cfg.Consumer,
		Description:    "wxbridge: events to WeChat subscribe messages",
		DeliverSubject: b.deliverSubject(),
		DeliverGroup:   b.cfg.Consumer,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        b.cfg.AckWait,
		// Only events being handled are outstanding, so none waits in a
		// client buffer while its ack wait runs.
		MaxAckPending: b.cfg.MaxInFlight,
		// Unlimited: the bridge itself bounds attempts per recipient and
		// reports retries_exhausted. A server-side cap would drop events
		// silently.
		MaxDeliver:     -1,
		FilterSubjects: nil,
		FilterSubject:  filterOf(b.cfg.EventSubjects),
	})
	if err != nil {
		return fmt.Errorf("create consumer %s on %s: %w", b.cfg.Consumer, b.cfg.EventStream, err)
	}
	return nil
}

func filterOf(subjects []string) string {
	if len(subjects) == 1 {
		return subjects[0]
	}
	return ""
}

func (b *Bridge) subject(s string) string { return b.cfg.Prefix + "." + s }
func (b *Bridge) deadSubject() string     { return b.subject("dead") }
func (b *Bridge) deliverSubject() string  { return "_" + b.cfg.Prefix + ".deliver." + b.cfg.Consumer }
