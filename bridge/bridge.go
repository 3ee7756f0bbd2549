package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/wechat"
)

// WeChat is the part of the WeChat client the bridge uses.
type WeChat interface {
	// Ready waits for a usable access token of app (see wechat.Client.Ready).
	Ready(ctx context.Context, app string) error
	Send(ctx context.Context, app string, m wechat.Message) (msgid string, err error)
	// An official account's template messages and subscription
	// notifications, and what it knows of its followers.
	SendTemplate(ctx context.Context, app string, m wechat.TemplateMessage) (msgid string, err error)
	SendBizSubscribe(ctx context.Context, app string, m wechat.BizMessage) (msgid string, err error)
	Followers(ctx context.Context, app, next string) (wechat.FollowerPage, error)
	UserInfoBatch(ctx context.Context, app string, openids []string) ([]wechat.UserInfo, error)
	Code2Session(ctx context.Context, app, code string) (wechat.Session, error)
}

// Config configures a Bridge. Zero fields take the defaults in
// setDefaults.
type Config struct {
	// Conn is the NATS connection for events, publishing, commands and
	// stream management.
	Conn   *nats.Conn
	Store  Store
	WeChat WeChat
	Logger *slog.Logger

	// EventStream is the stream of domain events; created with
	// EventSubjects if it does not exist.
	EventStream   string
	EventSubjects []string
	// Consumer is the durable consumer the bridge creates and binds to.
	Consumer string
	// EventPrefix is stripped from a subject to get the event type.
	EventPrefix string
	// OutputStream captures results, subscription changes and dead letters.
	OutputStream string
	// Prefix of the bridge's own subjects: Prefix.results.<type>,
	// Prefix.subscriptions.<app>, Prefix.dead, Prefix.cmd.*.
	Prefix string
	// OutputMaxAge bounds how long results stay in the output stream.
	OutputMaxAge time.Duration

	// MaxInFlight is how many events this bridge holds at once: being
	// handled, or asked of the server. Default 64. More makes single
	// recipient events cheaper (256: commits and acks shared by more
	// events, about 15% less CPU a send at a steady load) but holds more
	// memory: an event's planned recipients are held until it is done, and
	// 256 events to 2,000 people each outgrew the memory limit, so garbage
	// collection took the time (wxbridge bench --scenario fanout-1000).
	MaxInFlight int
	// MaxAckPending bounds the events all bridges hold together, with those
	// waiting out a retry delay (the consumer's MaxAckPending).
	MaxAckPending int
	// MaxDeliver is how often the server delivers an event before it gives
	// up on it; the bridge then dead-letters it.
	MaxDeliver int
	// FollowerListEvery is how often at most an official account's
	// follower list is walked to find people who followed before wxbridge
	// heard of it; FollowerListWait, how long a recipient waits for a walk
	// before its event is retried.
	FollowerListEvery, FollowerListWait time.Duration
	// MaxRecipients bounds the recipients of one event, across its rules.
	MaxRecipients int
	// Replicas of the streams the bridge creates (3 on a cluster).
	Replicas int
	// StallAfter: a consumer that delivered nothing new for this long while
	// events wait is reported by Progress (and /readyz).
	StallAfter time.Duration
	// LegacyIDsBefore: CloudEvents published before it are known by their
	// id alone, as older versions recorded them (see decodeEvent).
	LegacyIDsBefore time.Time
	// MaxSends bounds concurrent WeChat calls across all events.
	MaxSends int
	// AckWait is the JetStream ack wait of the consumer: how long an event
	// may take before it is redelivered.
	AckWait time.Duration
	// MaxAttempts is how many times a recipient is tried on transient
	// errors before it fails with retries_exhausted.
	MaxAttempts int
	// RetryBase and RetryMax bound the exponential redelivery backoff.
	RetryBase, RetryMax time.Duration
	// MaxEventBytes: larger events go to the dead-letter subject.
	MaxEventBytes int
	// ShutdownGrace is how long in-flight events may take after Run's
	// context ends.
	ShutdownGrace time.Duration
	// AppRate limits WeChat sends per app (per second); 0 means no limit.
	AppRate float64
	// SchedulePoll is the longest the schedule of deferred sends sleeps
	// before looking again (it also wakes when work is deferred).
	SchedulePoll time.Duration
	// Retention of send records and callback dedupe keys. Send records must
	// outlive the event stream's max age.
	Retention storage.Retention
	// Tracer provides the spans of events (see tracing.go). Default: none
	// are recorded, and an event's trace id is the one it came with.
	Tracer trace.TracerProvider
	// Registry receives the bridge's Prometheus metrics. Default: a new
	// registry (see Bridge.Registry).
	Registry *prometheus.Registry

	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.EventStream == "" {
		c.EventStream = "EVENTS"
	}
	if len(c.EventSubjects) == 0 {
		c.EventSubjects = []string{"events.>"}
	}
	if c.EventPrefix == "" {
		c.EventPrefix = "events."
	}
	if c.Consumer == "" {
		c.Consumer = "wxbridge"
	}
	if c.OutputStream == "" {
		c.OutputStream = "WXBRIDGE"
	}
	if c.Prefix == "" {
		c.Prefix = "wxbridge"
	}
	if c.OutputMaxAge <= 0 {
		c.OutputMaxAge = 7 * 24 * time.Hour
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 64
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 1000
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 40
	}
	if c.FollowerListEvery <= 0 {
		c.FollowerListEvery = 10 * time.Minute
	}
	if c.FollowerListWait <= 0 {
		c.FollowerListWait = 20 * time.Second
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = 5000
	}
	if c.StallAfter <= 0 {
		c.StallAfter = 5 * time.Minute
	}
	if c.MaxSends <= 0 {
		c.MaxSends = 256
	}
	if c.AckWait <= 0 {
		c.AckWait = time.Minute
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 8
	}
	if c.RetryBase <= 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 2 * time.Minute
	}
	if c.MaxEventBytes <= 0 {
		c.MaxEventBytes = 1 << 20
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 20 * time.Second
	}
	if c.SchedulePoll <= 0 {
		c.SchedulePoll = 30 * time.Second
	}
	if c.Retention.Sends <= 0 {
		c.Retention.Sends = 30 * 24 * time.Hour
	}
	if c.Retention.Pushes <= 0 {
		c.Retention.Pushes = 24 * time.Hour
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.Tracer == nil {
		c.Tracer = noop.NewTracerProvider()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports a configuration the bridge cannot run with.
func (c *Config) Validate() error {
	var errs []error
	if c.Conn == nil {
		errs = append(errs, errors.New("Conn is required"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("Store is required"))
	}
	if c.WeChat == nil {
		errs = append(errs, errors.New("WeChat is required"))
	}
	if c.MaxDeliver <= c.MaxAttempts {
		errs = append(errs, fmt.Errorf("MaxDeliver (%d) must exceed MaxAttempts (%d): the server would give up before the bridge", c.MaxDeliver, c.MaxAttempts))
	}
	return errors.Join(errs...)
}

// Bridge is the pipeline. Create it with New and run it with Run.
type Bridge struct {
	cfg   Config
	log   *slog.Logger
	rules atomic.Pointer[rules.Set]

	sends    chan struct{} // semaphore of concurrent WeChat calls
	openids  keyedMutex    // one send at a time per openid (WeChat answers 43108 otherwise)
	limits   appLimits
	metrics  *metrics
	inflight sync.Map // event id -> struct{}: guards concurrent redeliveries
	ready    atomic.Bool
	handlers gate // event handlers running; closed at shutdown
	repeats  *repeatLimiter
	progress progress
	tracer   trace.Tracer

	// taskWorkers run the recipients of events with more than one, at most
	// MaxSends at once across events: a goroutine for every recipient of
	// every event in flight (64 events to 1,000 users) took over 1 GiB,
	// while only MaxSends of them can be calling WeChat. eventWorkers run
	// events, MaxInFlight at once. Both are started by Run.
	taskWorkers, eventWorkers *workers
	followers                 *followerLists

	jsOnce sync.Once
	jsCtx  jetstream.JetStream
}

// Names are the bridge's names for its event stream, durable consumer,
// event subject prefix and own subjects' prefix, defaults applied.
type Names struct {
	EventStream, Consumer, EventPrefix, OutputStream, Prefix string
}

// Names returns the names the bridge uses (for tools that watch the same
// stream and consumer: metrics, the console).
func (b *Bridge) Names() Names {
	return Names{EventStream: b.cfg.EventStream, Consumer: b.cfg.Consumer, EventPrefix: b.cfg.EventPrefix,
		OutputStream: b.cfg.OutputStream, Prefix: b.cfg.Prefix}
}

// New checks cfg and returns a Bridge with no rules; set them with SetRules.
func New(cfg Config) (*Bridge, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bridge config: %w", err)
	}
	b := &Bridge{cfg: cfg, log: cfg.Logger,
		sends: make(chan struct{}, cfg.MaxSends), openids: keyedMutex{m: map[string]*keyedEntry{}},
		limits: appLimits{rate: cfg.AppRate, m: map[string]*rate.Limiter{}}, metrics: newMetrics(cfg.Registry),
		repeats: newRepeatLimiter(time.Minute, cfg.Now), tracer: cfg.Tracer.Tracer(instrumentation)}
	b.followers = newFollowerLists(b)
	b.rules.Store(&rules.Set{})
	return b, nil
}

// SetRules replaces the rules. Events already being processed finish with
// the rules they started with. Apps whose push settings let a forged push
// through are warned about here, every time rules are put in force.
func (b *Bridge) SetRules(s *rules.Set) {
	b.warnPushSecurity(s)
	b.rules.Store(s)
}

// Rules returns the rules in force.
func (b *Bridge) Rules() *rules.Set { return b.rules.Load() }

// Registry is where the bridge's metrics are registered.
func (b *Bridge) Registry() *prometheus.Registry { return b.cfg.Registry }

// Ready reports whether the bridge is consuming events.
func (b *Bridge) Ready() bool { return b.ready.Load() && b.cfg.Conn.IsConnected() }

// JetStreamReady asks the server for the event stream, proving JetStream
// answers.
func (b *Bridge) JetStreamReady(ctx context.Context) error {
	_, err := b.js().Stream(ctx, b.cfg.EventStream)
	return err
}

// Run provisions the streams and the consumers, then consumes events and
// commands until ctx ends. It then stops taking new events, lets in-flight
// events finish within ShutdownGrace, publishes what they queued and
// returns nil. Every goroutine it starts has ended when it returns, on
// every path.
func (b *Bridge) Run(ctx context.Context) error {
	if err := b.provision(ctx); err != nil {
		return err
	}
	b.eventWorkers, b.taskWorkers = startWorkers(b.cfg.MaxInFlight), startWorkers(b.cfg.MaxSends)
	defer func() {
		// Last: everything that hands them work has stopped.
		b.eventWorkers.stop()
		b.taskWorkers.stop()
		b.followers.stop()
	}()
	// The publisher and the sweep outlive the intake: the last events'
	// results are published after it stopped.
	bgCtx, stopBackground := context.WithCancel(context.Background())
	var background errgroup.Group
	background.Go(func() error { b.publishOutbox(bgCtx); return nil })
	background.Go(func() error { b.sweep(bgCtx); return nil })
	defer func() {
		stopBackground()
		_ = background.Wait()
	}()

	schedCtx, stopSchedule := context.WithCancel(ctx)
	var schedule errgroup.Group
	schedule.Go(func() error { b.runSchedule(schedCtx); return nil })
	defer func() {
		stopSchedule()
		_ = schedule.Wait()
	}()

	stopCommands, err := b.serveCommands()
	if err != nil {
		return err
	}
	defer stopCommands()
	stopAdvisories, err := b.consumeAdvisories(ctx)
	if err != nil {
		return err
	}
	defer stopAdvisories()
	events, err := b.consumeEvents()
	if err != nil {
		return err
	}
	b.ready.Store(true)
	b.log.Info("bridge running", "stream", b.cfg.EventStream, "consumer", b.cfg.Consumer, "in_flight", b.cfg.MaxInFlight)

	<-ctx.Done()
	b.ready.Store(false)
	b.log.Info("bridge stopping: finishing in-flight events", "grace", b.cfg.ShutdownGrace)
	graceCtx, cancelGrace := context.WithTimeout(context.Background(), b.cfg.ShutdownGrace)
	defer cancelGrace()
	// Ask for nothing more, and give back what the requests already out
	// still bring, while the events being handled finish.
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		events.stopPulling(graceCtx)
	}()
	select {
	case <-b.handlers.close():
	case <-graceCtx.Done():
		b.log.Warn("shutdown grace over; unfinished events will be redelivered")
	}
	<-stopped
	stopSchedule()
	_ = schedule.Wait()
	events.stop(b.log)
	// Publish what the last events queued before the deferred stops.
	b.flushOutbox(b.cfg.ShutdownGrace)
	b.log.Info("bridge stopped")
	return nil
}

// appLimits holds one rate limiter per app.
type appLimits struct {
	rate float64
	mu   sync.Mutex
	m    map[string]*rate.Limiter
}

// wait blocks until app may send, or ctx ends.
func (l *appLimits) wait(ctx context.Context, app string) error {
	if l.rate <= 0 {
		return nil
	}
	l.mu.Lock()
	lim, ok := l.m[app]
	if !ok {
		// A burst of a tenth of a second's worth smooths without letting a
		// backlog hit WeChat all at once.
		lim = rate.NewLimiter(rate.Limit(l.rate), max(1, int(l.rate/10)))
		l.m[app] = lim
	}
	l.mu.Unlock()
	return lim.Wait(ctx)
}

// sweep expires old records once an hour (and once at start).
func (b *Bridge) sweep(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		st, err := b.cfg.Store.Expire(ctx, b.cfg.Retention)
		if err != nil && ctx.Err() == nil {
			b.log.Warn("expire old records", "err", err)
		} else if st.Sends+st.Pushes+st.Dedupe+st.Caps > 0 {
			b.log.Info("expired old records", "sends", st.Sends, "pushes", st.Pushes, "dedupe", st.Dedupe, "caps", st.Caps)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
