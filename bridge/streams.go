package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/internal/jsapi"
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
	// Generous: on a cluster that is forming, or with several bridges
	// creating the same streams at once, requests go unanswered and are
	// tried again (jsapi.Retry).
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err = jsapi.Retry(ctx, "create stream "+b.cfg.EventStream, func(ctx context.Context) error {
		_, err := js.Stream(ctx, b.cfg.EventStream)
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err // there, or the lookup failed
		}
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        b.cfg.EventStream,
			Description: "domain events (created by wxbridge)",
			Subjects:    b.cfg.EventSubjects,
			Storage:     jetstream.FileStorage,
			MaxAge:      14 * 24 * time.Hour,
			Duplicates:  2 * time.Minute,
			Replicas:    b.cfg.Replicas,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil // another bridge made it an instant ago
		}
		return err
	})
	if err != nil {
		return err
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
	if err := ensureStream(ctx, js, out); err != nil {
		return err
	}
	if err := jsapi.Retry(ctx, "create consumer "+b.cfg.Consumer, func(ctx context.Context) error {
		return b.provisionConsumer(ctx, js)
	}); err != nil {
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
	if err := ensureStream(ctx, js, adv); err != nil {
		return err
	}
	return jsapi.Retry(ctx, "create consumer "+b.cfg.Consumer+" on "+adv.Name, func(ctx context.Context) error {
		_, err := js.CreateOrUpdateConsumer(ctx, adv.Name, jetstream.ConsumerConfig{
			Durable:     b.cfg.Consumer,
			Description: "wxbridge: events the event consumer gave up on, to the dead-letter subject",
			AckPolicy:   jetstream.AckExplicitPolicy,
			AckWait:     time.Minute,
		})
		return err
	})
}

// ensureStream creates a stream the bridge owns, or brings an existing one
// to cfg. It leaves alone one that already says what cfg says: an update
// that changes nothing is a request a busy cluster may leave unanswered.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	return jsapi.Retry(ctx, "create stream "+cfg.Name, func(ctx context.Context) error {
		s, err := js.Stream(ctx, cfg.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			_, err = js.CreateStream(ctx, cfg)
			return err
		case err != nil:
			return err
		case sameStream(s.CachedInfo().Config, cfg):
			return nil
		}
		_, err = js.UpdateStream(ctx, cfg)
		return err
	})
}

// sameStream reports whether have already says everything want sets.
func sameStream(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) && have.MaxAge == want.MaxAge && have.Duplicates == want.Duplicates &&
		have.Replicas == want.Replicas && have.Storage == want.Storage && have.Description == want.Description
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
//
// The replacement is a delete and a create: a bridge killed between the two
// finds no consumer and makes one from the stream's start. Its events then
// come again too, found in their send records (kept 30 days; the stream
// the bridge creates keeps events 14).
func (b *Bridge) provisionConsumer(ctx context.Context, js jetstream.JetStream) error {
	cfg := b.eventConsumerConfig()
	info, err := js.Consumer(ctx, b.cfg.EventStream, b.cfg.Consumer)
	if errors.Is(err, jetstream.ErrNotPullConsumer) {
		push, err := js.PushConsumer(ctx, b.cfg.EventStream, b.cfg.Consumer)
		if err != nil {
			return fmt.Errorf("look up push consumer %s: %w", b.cfg.Consumer, err)
		}
		floor := push.CachedInfo().AckFloor.Stream
		b.log.Warn("replacing the push consumer of an older wxbridge with a pull consumer", "consumer", b.cfg.Consumer, "from_stream_seq", floor+1)
		if err := js.DeleteConsumer(ctx, b.cfg.EventStream, b.cfg.Consumer); err != nil {
			return fmt.Errorf("replace push consumer %s: %w", b.cfg.Consumer, err)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, floor+1
	} else if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("look up consumer %s: %w", b.cfg.Consumer, err)
	} else if err == nil {
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
