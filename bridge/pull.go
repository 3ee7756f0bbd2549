package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
)

// pullSubscriber is a watermill message.Subscriber over one durable pull
// consumer that several bridges may share. It holds an exact bound: the
// events being handled plus the events it has asked the server for never
// exceed Max.
//
// Why not watermill-nats' pkg/jetstream subscriber: it runs one nats.go
// Consume per Subscribe, and a watermill handler takes one message at a
// time. With PullMaxMessages above one, each Consume buffers events beyond
// its handler (nats.go's default is 500), whose ack wait is already
// running and which no other bridge can take. With PullMaxMessages of one
// it holds one event a subscription, so N parallel handlers need N
// subscriptions, each a Consume with its own pull requests, heartbeats and
// goroutines: the N queue-group members this subscriber replaced.
// TestPullSubscriberHoldsExactBound measures both on one consumer (8
// slots, 120 slow events): each held 8 at peak, with 117 pull requests
// here against 128 for eight Consumes. This subscriber keeps one
// subscription and one request loop for any bound, asks the server for
// exactly as many events as it has free slots, and gives back what arrives
// after it stops (see giveBack). It plugs into the watermill Router like
// any other subscriber.
//
// The JetStream message behind each watermill message is in the message's
// context (see deliveryOf), not in its metadata: no header of an event can
// pose as the bridge's own bookkeeping.
type pullSubscriber struct {
	cfg   pullConfig
	log   *slog.Logger
	inbox string

	mu          sync.Mutex
	held        int // delivered to a handler, not yet acked or nacked
	outstanding int // asked of the server, not yet arrived or released
	draining    bool
	lastSeen    time.Time // last message or status on the inbox
	requestsEnd time.Time // when the last request sent has surely expired
	wake        chan struct{}
	sub         *nats.Subscription
	out         chan *message.Message
	done        chan struct{} // closed by Close
	abandon     chan struct{} // closed by Close when handlers overran closeWait
	closeOnce   sync.Once

	// sending is held (for reading) while an event is handed to the router,
	// so that Close can tell when no one will send on out any more.
	sending sync.RWMutex
	closed  bool
	wg      sync.WaitGroup // the request loop and the per-message waiters
}

type pullConfig struct {
	Conn     *nats.Conn
	Stream   string
	Consumer string
	// Max is the bound on events held (handled or asked for).
	Max int
	// Expires is the life of one pull request; Heartbeat the server's idle
	// heartbeat while one waits. A request is renewed when it expires.
	Expires, Heartbeat time.Duration
	// NakDelay is the redelivery delay of a nacked event whose handler did
	// not choose one (see delivery.retryAfter), from its delivery count.
	NakDelay func(delivered uint64) time.Duration
	Logger   *slog.Logger
}

// delivery is one JetStream delivery of an event, as the bridge sees it.
type delivery struct {
	msg  *nats.Msg
	meta *nats.MsgMetadata
	// retryAfter, set by the handler before it returns an error, is the
	// redelivery delay it wants (0: the default backoff). A negative value
	// asks for an immediate redelivery.
	retryAfter time.Duration
}

type deliveryKey struct{}

// deliveryOf returns the delivery behind a message from a pullSubscriber.
func deliveryOf(m *message.Message) *delivery {
	d, _ := m.Context().Value(deliveryKey{}).(*delivery)
	return d
}

func newPullSubscriber(cfg pullConfig) *pullSubscriber {
	if cfg.Expires <= 0 {
		// Short, so that what a stopping bridge gives back waits little.
		cfg.Expires = 5 * time.Second
	}
	if cfg.Heartbeat <= 0 || cfg.Heartbeat > cfg.Expires/2 {
		cfg.Heartbeat = cfg.Expires / 5
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &pullSubscriber{cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1), done: make(chan struct{}), abandon: make(chan struct{})}
}

// Subscribe starts pulling. The topic is ignored: the consumer decides what
// is delivered. It may be called once.
func (s *pullSubscriber) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out != nil {
		return nil, errors.New("pull subscriber: already subscribed")
	}
	s.inbox = s.cfg.Conn.NewInbox()
	sub, err := s.cfg.Conn.Subscribe(s.inbox, s.receive)
	if err != nil {
		return nil, fmt.Errorf("subscribe to pull inbox: %w", err)
	}
	// Events held are bounded by Max; the client must never drop one.
	_ = sub.SetPendingLimits(-1, -1)
	s.sub = sub
	s.out = make(chan *message.Message)
	s.lastSeen = time.Now()
	status := s.cfg.Conn.StatusChanged(nats.CONNECTED, nats.RECONNECTING)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.cfg.Conn.RemoveStatusListener(status)
		s.run(ctx, status)
	}()
	s.kick()
	return s.out, nil
}

func (s *pullSubscriber) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run asks for events whenever slots are free, until Close or ctx ends.
func (s *pullSubscriber) run(ctx context.Context, status chan nats.Status) {
	check := time.NewTicker(s.cfg.Heartbeat)
	defer check.Stop()
	// linger holds back a small request while others may free up: near
	// saturation, one request per event freed would cost the server and the
	// bridge more than the wait.
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	lingering := false
	for {
		force := false
		select {
		case <-s.done:
			return
		case <-ctx.Done():
			return
		case st := <-status:
			if st == nats.CONNECTED {
				// Requests die with the connection: none is outstanding.
				s.mu.Lock()
				s.outstanding = 0
				s.mu.Unlock()
			}
		case <-check.C:
			s.mu.Lock()
			if s.outstanding > 0 && time.Since(s.lastSeen) > 2*s.cfg.Heartbeat+time.Second {
				// Not even a heartbeat: the requests were lost (a server
				// restart, a network partition). Ask again.
				s.log.Debug("pull requests silent; renewing", "outstanding", s.outstanding)
				s.outstanding = 0
			}
			s.mu.Unlock()
		case <-linger.C:
			lingering, force = false, true
		case <-s.wake:
		}
		if !s.request(force) && !lingering {
			lingering = true
			linger.Reset(pullLinger)
		}
	}
}

// pullLinger is how long a request smaller than a quarter of Max waits for
// more slots to free up.
const pullLinger = time.Millisecond

// request asks the server for every free slot, in batches of at least a
// quarter of Max (fewer, larger requests) unless force. It reports false
// when slots are free but it held back.
func (s *pullSubscriber) request(force bool) bool {
	s.mu.Lock()
	free := s.cfg.Max - s.held - s.outstanding
	if s.draining || free <= 0 {
		s.mu.Unlock()
		return true
	}
	if free < max(1, s.cfg.Max/4) && !(force && s.outstanding == 0) {
		// A request still out brings events meanwhile; with none out, wait
		// a moment for company.
		out := s.outstanding > 0
		s.mu.Unlock()
		return out
	}
	s.outstanding += free
	s.requestsEnd = time.Now().Add(s.cfg.Expires + time.Second)
	if s.outstanding == free {
		s.lastSeen = time.Now() // the heartbeat clock starts with the request
	}
	s.mu.Unlock()
	req, _ := json.Marshal(struct {
		Batch     int           `json:"batch"`
		Expires   time.Duration `json:"expires"`
		Heartbeat time.Duration `json:"idle_heartbeat"`
	}{free, s.cfg.Expires, s.cfg.Heartbeat})
	subject := "$JS.API.CONSUMER.MSG.NEXT." + s.cfg.Stream + "." + s.cfg.Consumer
	if err := s.cfg.Conn.PublishRequest(subject, s.inbox, req); err != nil {
		s.mu.Lock()
		s.outstanding -= free
		s.mu.Unlock()
		s.log.Debug("pull request failed", "err", err)
	}
	return true
}

// receive handles everything the server sends to the inbox: events, and
// status messages that end or keep alive a request.
func (s *pullSubscriber) receive(m *nats.Msg) {
	s.mu.Lock()
	s.lastSeen = time.Now()
	s.mu.Unlock()
	if code := m.Header.Get("Status"); code != "" && len(m.Data) == 0 {
		s.status(code, m)
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		s.log.Warn("pull inbox: not a JetStream delivery", "subject", m.Subject, "err", err)
		return
	}
	s.mu.Lock()
	if s.outstanding > 0 {
		s.outstanding--
	}
	refuse := s.draining || s.held >= s.cfg.Max
	if !refuse {
		s.held++
	}
	s.mu.Unlock()
	if refuse {
		// Shutting down, or an event from a request this side had given up
		// on: back to the server, for any bridge.
		s.giveBack(m)
		return
	}
	s.sending.RLock()
	defer s.sending.RUnlock()
	if s.closed {
		s.mu.Lock()
		s.held--
		s.mu.Unlock()
		s.giveBack(m)
		return
	}
	d := &delivery{msg: m, meta: meta}
	wm := message.NewMessage(strconv.FormatUint(meta.Sequence.Stream, 10)+"."+strconv.FormatUint(meta.NumDelivered, 10), m.Data)
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), deliveryKey{}, d))
	wm.SetContext(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		s.settle(wm, d)
	}()
	select {
	case s.out <- wm:
	case <-s.done:
		// Never reached a handler: give it back at once.
		d.retryAfter = -1
		wm.Nack()
	}
}

// settle waits for the handler's verdict and tells the server.
func (s *pullSubscriber) settle(wm *message.Message, d *delivery) {
	defer func() {
		s.mu.Lock()
		s.held--
		s.mu.Unlock()
		s.kick()
	}()
	select {
	case <-wm.Acked():
		// Confirmed by the server: an ack lost on the way would bring the
		// event back, and its recipients would see a duplicate result.
		if err := d.msg.AckSync(); err != nil {
			s.log.Warn("ack event", "stream_seq", d.meta.Sequence.Stream, "err", err)
		}
	case <-wm.Nacked():
		if d.retryAfter < 0 {
			s.giveBack(d.msg)
			return
		}
		delay := d.retryAfter
		if delay == 0 && s.cfg.NakDelay != nil {
			delay = s.cfg.NakDelay(d.meta.NumDelivered)
		}
		var err error
		if delay > 0 {
			err = d.msg.NakWithDelay(delay)
		} else {
			err = d.msg.Nak()
		}
		if err != nil {
			s.log.Warn("nak event", "stream_seq", d.meta.Sequence.Stream, "err", err)
		}
	case <-s.abandon:
		// Its handler overran the close: give it back now rather than after
		// the ack wait.
		s.giveBack(d.msg)
	}
}

// giveBack returns an event this subscriber will not handle to the server
// for any bridge. While requests of its own may still be open at the server
// the event would come straight back to them (and back, and back, each time
// counted towards MaxDeliver), so it stays away until they have expired.
func (s *pullSubscriber) giveBack(m *nats.Msg) {
	s.mu.Lock()
	wait := time.Until(s.requestsEnd)
	s.mu.Unlock()
	var err error
	if wait > 0 {
		err = m.NakWithDelay(wait)
	} else {
		err = m.Nak()
	}
	if err != nil {
		s.log.Debug("give back event", "err", err)
	}
}

// status accounts for a status message: 100 is a heartbeat; 408 (request
// expired) and 409 (conflicts) release what the request had left.
func (s *pullSubscriber) status(code string, m *nats.Msg) {
	if code == "100" {
		return
	}
	s.mu.Lock()
	if left := m.Header.Get("Nats-Pending-Messages"); left != "" {
		if n, err := strconv.Atoi(left); err == nil {
			s.outstanding = max(0, s.outstanding-n)
		}
	} else if code == "409" {
		// Leadership change, server shutdown, consumer deleted: every
		// request is gone.
		s.outstanding = 0
	}
	s.mu.Unlock()
	if code == "409" {
		s.log.Debug("pull request ended", "status", code, "description", m.Header.Get("Description"))
	}
	s.kick()
}

// Stop asks for no more events: it drops the inbox, and the server, which
// delivers only to a request whose inbox someone listens on, ends the
// requests still out. An event already on its way to the inbox when it
// goes is redelivered after its ack wait (to this bridge's successor or
// another bridge): late, never lost. Events being handled are not affected,
// and what this subscriber gives back from now on goes back at once.
func (s *pullSubscriber) Stop(ctx context.Context) {
	s.mu.Lock()
	s.draining = true
	s.outstanding = 0
	s.requestsEnd = time.Now()
	sub := s.sub
	s.mu.Unlock()
	if sub != nil {
		// Drain, not unsubscribe: what the server sent before it had the
		// unsubscribe still reaches receive, which gives it back at once.
		// Dropped, it would wait out the ack wait.
		closed := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil {
			_ = sub.Unsubscribe()
			return
		}
		select {
		case <-closed:
		case <-ctx.Done():
		}
	}
}

// Held reports the events being handled and asked for: at most Max.
func (s *pullSubscriber) Held() (handled, asked int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held, s.outstanding
}

// closeWait is how long Close waits for handlers to settle the events they
// hold before it gives those events back.
const closeWait = 5 * time.Second

// Close stops the subscription. It waits up to closeWait for the events
// being handled to be acked or nacked, then gives back the rest.
func (s *pullSubscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.draining = true
		sub, out := s.sub, s.out
		s.mu.Unlock()
		close(s.done)
		s.sending.Lock()
		s.closed = true
		s.sending.Unlock()
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		settled := make(chan struct{})
		go func() {
			s.wg.Wait()
			close(settled)
		}()
		select {
		case <-settled:
		case <-time.After(closeWait):
			close(s.abandon)
			<-settled
		}
		if out != nil {
			close(out)
		}
	})
	return nil
}
