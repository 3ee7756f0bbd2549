package console

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// FeedConfig names what Follow reads.
type FeedConfig struct {
	// Stream is the output stream (default WXBRIDGE), Prefix the bridge's
	// subject prefix (default wxbridge): results on Prefix.results.>,
	// ledger changes on Prefix.subscriptions.>, dead letters on
	// Prefix.dead.
	Stream, Prefix string
}

// Follow keeps the model up to date with the output stream until ctx
// ends: results and dead letters from Window ago, ledger changes from
// LedgerLookback ago, then everything new. It reads with ordered
// consumers (ephemeral, no acks, no state on the server to clean up), so
// every bridge's console reads the whole shared stream. A failure to read
// is retried with a backoff and shown in FeedStatus.LastErr; Follow
// returns only when ctx ends.
func (m *Model) Follow(ctx context.Context, js jetstream.JetStream, fc FeedConfig) error {
	if fc.Stream == "" {
		fc.Stream = "WXBRIDGE"
	}
	if fc.Prefix == "" {
		fc.Prefix = "wxbridge"
	}
	now := m.cfg.Now()
	results := feed{name: "results", subjects: []string{fc.Prefix + ".results.>", fc.Prefix + ".dead"}, from: now.Add(-m.cfg.Window),
		kind: func(subject string) int {
			if subject == fc.Prefix+".dead" {
				return kindDead
			}
			return kindResult
		},
		caughtUp: func(s *FeedStatus) { s.ResultsCaughtUp = true }}
	ledger := feed{name: "ledger changes", subjects: []string{fc.Prefix + ".subscriptions.>"}, from: now.Add(-m.cfg.LedgerLookback),
		kind:     func(string) int { return kindChange },
		caughtUp: func(s *FeedStatus) { s.LedgerCaughtUp = true }}
	m.mu.Lock()
	m.status.ResultsFrom, m.status.LedgerFrom = results.from, ledger.from
	m.mu.Unlock()
	g, ctx := errgroup.WithContext(ctx)
	for _, f := range []*feed{&results, &ledger} {
		g.Go(func() error {
			m.follow(ctx, js, fc.Stream, f)
			return nil
		})
	}
	return g.Wait()
}

// feed is one ordered consumer of the output stream.
type feed struct {
	name     string
	subjects []string
	from     time.Time
	kind     func(subject string) int
	caughtUp func(*FeedStatus)

	lastSeq uint64 // the last stream sequence read, to resume after a failure
	live    bool
}

// idleCheck is how long the feed waits for a message before it asks the
// server whether it has read everything.
const idleCheck = time.Second

func (m *Model) follow(ctx context.Context, js jetstream.JetStream, stream string, f *feed) {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		err := m.read(ctx, js, stream, f)
		if ctx.Err() != nil {
			return
		}
		m.mu.Lock()
		m.status.LastErr = fmt.Sprintf("read %s from stream %s: %v", f.name, stream, err)
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// read follows the stream until ctx ends or reading fails.
func (m *Model) read(ctx context.Context, js jetstream.JetStream, stream string, f *feed) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: f.subjects}
	// No NamePrefix: the default is unique, and consoles of several
	// bridges read the same stream.
	if f.lastSeq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.lastSeq+1
	} else {
		from := f.from
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return err
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	m.mu.Lock()
	m.status.LastErr = ""
	m.mu.Unlock()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(idleCheck))
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, nats.ErrTimeout):
			if !f.live {
				m.checkCaughtUp(ctx, cons, f)
			}
			continue
		case err != nil:
			return err
		}
		md, err := msg.Metadata()
		if err != nil {
			m.unreadable()
			continue
		}
		f.lastSeq = md.Sequence.Stream
		_ = m.apply(f.kind(msg.Subject()), msg.Headers(), msg.Data(), md.Timestamp, f.live)
		if !f.live && md.NumPending == 0 {
			m.markCaughtUp(f)
		}
	}
}

// checkCaughtUp marks the feed caught up when the server has nothing more
// for it: with no message in the stream at all, none ever comes to say so.
func (m *Model) checkCaughtUp(ctx context.Context, cons jetstream.Consumer, f *feed) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := cons.Info(ctx)
	if err == nil && info.NumPending == 0 {
		m.markCaughtUp(f)
	}
}

func (m *Model) markCaughtUp(f *feed) {
	f.live = true
	m.mu.Lock()
	f.caughtUp(&m.status)
	m.mu.Unlock()
}
