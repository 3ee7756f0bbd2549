package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// provision creates the event stream (if missing), the output stream, the
// advisory stream and the durable consumers. An existing event stream
// belongs to whoever created it and is not changed. The consumers are
// created by the bridge, not by a subscription, so closing one never
// deletes them.
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
			Replicas:    b.cfg.Replicas,
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
		// Longer than any relay takes to hand an entry out again (a bridge
		// that died holding it: the outbox consumer's ack wait), so a copy
		// is always dropped.
		Duplicates: 10 * time.Minute,
		Replicas:   b.cfg.Replicas,
	}
	if _, err := js.CreateOrUpdateStream(ctx, out); err != nil {
		return fmt.Errorf("create stream %s: %w", b.cfg.OutputStream, err)
	}

	if err := b.provisionConsumer(ctx, js); err != nil {
		return err
	}
	adv := jetstream.StreamConfig{
		Name:        b.advisoryStream(),
		Description: "JetStream's max-deliveries advisories of the wxbridge event consumer",
		Subjects:    []string{b.advisorySubject()},
		Storage:     jetstream.FileStorage,
		MaxAge:      b.cfg.OutputMaxAge,
		Replicas:    b.cfg.Replicas,
	}
	if _, err := js.CreateOrUpdateStream(ctx, adv); err != nil {
		return fmt.Errorf("create stream %s: %w", adv.Name, err)
	}
	_, err = js.CreateOrUpdateConsumer(ctx, adv.Name, jetstream.ConsumerConfig{
		Durable:     b.cfg.Consumer,
		Description: "wxbridge: events the event consumer gave up on, to the dead-letter subject",
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     time.Minute,
	})
	if err != nil {
		return fmt.Errorf("create consumer %s on %s: %w", b.cfg.Consumer, adv.Name, err)
	}
	return nil
}

// eventConsumerConfig is the durable pull consumer every bridge shares.
func (b *Bridge) eventConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       b.cfg.Consumer,
		Description:   "wxbridge: events to WeChat subscribe messages",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       b.cfg.AckWait,
		// Each bridge holds at most MaxInFlight itself; this bounds what all
		// of them hold together with the events waiting out a retry delay.
		MaxAckPending: b.cfg.MaxAckPending,
		// The last line of defence against an event that fails the same way
		// every time: the server stops delivering it and says so in an
		// advisory, which lands it in the dead-letter subject.
		MaxDeliver:    b.cfg.MaxDeliver,
		FilterSubject: filterOf(b.cfg.EventSubjects),
	}
}

// provisionConsumer creates (or updates) the durable pull consumer. A push
// consumer of the same name, left by wxbridge before it pulled, is
// replaced by a pull consumer that starts after the push consumer's ack
// floor: events acked beyond the floor come again and are reported as
// duplicates; none is lost.
func (b *Bridge) provisionConsumer(ctx context.Context, js jetstream.JetStream) error {
	cfg := b.eventConsumerConfig()
	info, err := js.Consumer(ctx, b.cfg.EventStream, b.cfg.Consumer)
	if err == nil && info.CachedInfo().Config.DeliverSubject != "" {
		floor := info.CachedInfo().AckFloor.Stream
		b.log.Warn("replacing the push consumer of an older wxbridge with a pull consumer", "consumer", b.cfg.Consumer, "from_stream_seq", floor+1)
		if err := js.DeleteConsumer(ctx, b.cfg.EventStream, b.cfg.Consumer); err != nil {
			return fmt.Errorf("replace push consumer %s: %w", b.cfg.Consumer, err)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, floor+1
	} else if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("look up consumer %s: %w", b.cfg.Consumer, err)
	}
	if err == nil && cfg.DeliverPolicy == jetstream.DeliverAllPolicy {
		// The start position of an existing consumer cannot change.
		old := info.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq = old.DeliverPolicy, old.OptStartSeq
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, b.cfg.EventStream, cfg); err != nil {
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
func (b *Bridge) advisoryStream() string  { return b.cfg.OutputStream + "_ADVISORIES" }
