package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/bridge"
)

// rulesYAML is the bench's rules file: one rule sending to a named user,
// one fanning out to everyone holding a role. Ledger checks are on (the
// default, `subscriptions: ledger`): every send consumes a one-time credit.
func rulesYAML() string {
	return `apps:
  main:
    appid: ` + benchAppID + `
    secret: ` + benchSecret + `
    state: formal
templates:
  notice:
    app: main
    id: ` + benchTemplate + `
    kind: one_time
    keywords: {character_string1: character_string, thing2: thing}
rules:
  - name: notice-to-user
    on: bench.notice
    template: notice
    page: pages/notice/detail?id={{ .id }}
    to:
      - user: "{{ .data.user }}"
    data:
      character_string1: "{{ .id }}"
      thing2: "{{ .data.text }}"
  - name: notice-to-team
    on: bench.team
    template: notice
    page: pages/notice/detail?id={{ .id }}
    to:
      - role: staff
        scope: "team:{{ .data.team }}"
    data:
      character_string1: "{{ .id }}"
      thing2: "{{ .data.text }}"
`
}

// userID names the i-th bench user.
func userID(i int) string { return "u" + strconv.Itoa(i) }

// eventID names the i-th event of a run.
func eventID(i int) string { return "e" + strconv.Itoa(i) }

// request sends a command to the bridge and decodes its reply into out.
func request(ctx context.Context, nc *nats.Conn, subject string, body, out any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		msg, err := nc.RequestWithContext(rctx, subject, data)
		cancel()
		if err == nil {
			if err := json.Unmarshal(msg.Data, out); err != nil {
				return fmt.Errorf("reply to %s: %w", subject, err)
			}
			return nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("request %s: %w", subject, lastErr)
}

// parallel runs fn(0..n-1) on width goroutines and returns the first error.
func parallel(ctx context.Context, n, width int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(width, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// seed binds users 0..users-1, puts the first team of them in role staff
// of team:1, and grants user i credits[i] one-time credits, all through
// the bridge's NATS commands, as a mini program backend would.
func seed(ctx context.Context, nc *nats.Conn, users, team int, credits func(i int) int) error {
	const width = 64
	err := parallel(ctx, users, width, func(ctx context.Context, i int) error {
		var reply bridge.BindReply
		if err := request(ctx, nc, "wxbridge.cmd.bind", bridge.BindRequest{App: "main", UserID: userID(i), OpenID: openIDOf(userID(i))}, &reply); err != nil {
			return err
		}
		if reply.Error != "" {
			return fmt.Errorf("bind %s: %s", userID(i), reply.Error)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = parallel(ctx, team, width, func(ctx context.Context, i int) error {
		var reply bridge.OKReply
		req := map[string]any{"user_id": userID(i), "grant": []map[string]string{{"role": "staff", "scope": "team:1"}}}
		if err := request(ctx, nc, "wxbridge.cmd.roles", req, &reply); err != nil {
			return err
		}
		if reply.Error != "" {
			return fmt.Errorf("grant role to %s: %s", userID(i), reply.Error)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// One accept is one credit. Accepts reported as long ago as an hour
	// no longer wait to pair with a popup push, so the ledger entry stays
	// small however many there are.
	var grants []int
	for i := range users {
		for range credits(i) {
			grants = append(grants, i)
		}
	}
	at := time.Now().Add(-time.Hour)
	return parallel(ctx, len(grants), width, func(ctx context.Context, j int) error {
		var reply bridge.SubscriptionsReply
		req := bridge.SubscriptionsRequest{App: "main", UserID: userID(grants[j]), Results: map[string]string{benchTemplate: "accept"}, At: at}
		if err := request(ctx, nc, "wxbridge.cmd.subscriptions", req, &reply); err != nil {
			return err
		}
		if reply.Error != "" {
			return fmt.Errorf("grant credit to %s: %s", userID(grants[j]), reply.Error)
		}
		return nil
	})
}

// publisher publishes the events of a run and remembers when each was
// first published. A publish that fails (NATS restarting) is retried with
// the same Nats-Msg-Id, so JetStream keeps one copy.
type publisher struct {
	js      jetstream.JetStream
	subject func(i int) string
	payload func(i int) []byte

	mu   sync.Mutex
	at   []time.Time
	done atomic.Int64 // events acknowledged by the server
	errs atomic.Int64 // publishes retried
}

func newPublisher(nc *nats.Conn, n int, subject func(int) string, payload func(int) []byte) (*publisher, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024), jetstream.WithPublishAsyncTimeout(3*time.Second))
	if err != nil {
		return nil, err
	}
	return &publisher{js: js, subject: subject, payload: payload, at: make([]time.Time, n)}, nil
}

func (p *publisher) published(i int) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.at[i]
}

// run publishes every event, at rate per second (0: as fast as the server
// acknowledges), and returns once all are acknowledged.
func (p *publisher) run(ctx context.Context, rate int) error {
	type pending struct {
		i int
		f jetstream.PubAckFuture
	}
	futures := make(chan pending, 4096)
	var retry sync.WaitGroup
	checkDone := make(chan error, 1)
	go func() {
		var (
			mu    sync.Mutex
			first error
		)
		for pd := range futures {
			select {
			case <-pd.f.Ok():
				p.done.Add(1)
			case <-pd.f.Err():
				p.errs.Add(1)
				retry.Add(1)
				go func(i int) {
					defer retry.Done()
					if err := p.publishSync(ctx, i); err != nil {
						mu.Lock()
						first = cmp.Or(first, err)
						mu.Unlock()
					}
				}(pd.i)
			}
		}
		retry.Wait()
		checkDone <- first
	}()
	start := time.Now()
	var err error
	for i := range p.at {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
				}
			}
		}
		if err = ctx.Err(); err != nil {
			break
		}
		m := p.msg(i)
		p.mu.Lock()
		p.at[i] = time.Now()
		p.mu.Unlock()
		f, perr := p.js.PublishMsgAsync(m)
		if perr != nil {
			// Too many pending (a stalled server) or disconnected: publish
			// this one synchronously, retrying until it is in.
			p.errs.Add(1)
			if err = p.publishSync(ctx, i); err != nil {
				break
			}
			continue
		}
		futures <- pending{i, f}
	}
	close(futures)
	if cerr := <-checkDone; err == nil {
		err = cerr
	}
	return err
}

func (p *publisher) msg(i int) *nats.Msg {
	m := nats.NewMsg(p.subject(i))
	m.Data = p.payload(i)
	m.Header.Set(nats.MsgIdHdr, eventID(i))
	return m
}

func (p *publisher) publishSync(ctx context.Context, i int) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := p.js.PublishMsg(pctx, p.msg(i))
		cancel()
		if err == nil {
			p.done.Add(1)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publish event %d: %w", i, ctx.Err())
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// collector reads the bridge's results from the output stream (from the
// start, across NATS restarts) and keeps what each (event, recipient) got.
type collector struct {
	mu        sync.Mutex
	expected  map[pairKey]bool
	outcomes  map[pairKey]*outcome
	remaining int
	all       chan struct{} // closed when every expected pair has an outcome
	results   int
	stray     int // results for pairs the bench did not expect
	cc        jetstream.ConsumeContext
}

// outcome is what the results said about one (event, recipient).
type outcome struct {
	status, reason string
	at             time.Time // when the bench received the first final result
	sent           bool      // some result said sent
	inDoubt        bool
	results        int
}

func startCollector(ctx context.Context, nc *nats.Conn, expected map[pairKey]bool) (*collector, error) {
	c := &collector{expected: expected, outcomes: make(map[pairKey]*outcome, len(expected)), remaining: len(expected), all: make(chan struct{})}
	if c.remaining == 0 {
		close(c.all)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, "WXBRIDGE", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"wxbridge.results.>"}})
	if err != nil {
		return nil, fmt.Errorf("results consumer: %w", err)
	}
	c.cc, err = cons.Consume(c.handle, jetstream.PullMaxMessages(2048))
	if err != nil {
		return nil, fmt.Errorf("consume results: %w", err)
	}
	return c, nil
}

func (c *collector) handle(m jetstream.Msg) {
	now := time.Now()
	var r bridge.Result
	if err := json.Unmarshal(m.Data(), &r); err != nil {
		return
	}
	k := pairKey{r.EventID, r.UserID}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.results++
	if !c.expected[k] {
		c.stray++
		return
	}
	o := c.outcomes[k]
	if o == nil {
		o = &outcome{}
		c.outcomes[k] = o
	}
	o.results++
	o.sent = o.sent || r.Status == bridge.StatusSent
	o.inDoubt = o.inDoubt || r.InDoubt
	// A redelivery of a finished event reports skipped/duplicate for each
	// recipient; that is an echo of the outcome, not the outcome.
	if o.status == "" && !(r.Status == bridge.StatusSkipped && r.Reason == "duplicate") {
		o.status, o.reason, o.at = r.Status, r.Reason, now
		c.remaining--
		if c.remaining == 0 {
			close(c.all)
		}
	}
}

// progress is how many expected pairs have an outcome.
func (c *collector) progress() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.expected) - c.remaining
}

func (c *collector) stop() {
	if c != nil && c.cc != nil {
		c.cc.Stop()
	}
}

// errIncomplete: the scenario's time limit passed before every recipient
// had an outcome. The report still counts what happened.
var errIncomplete = errors.New("not every recipient had an outcome in time")
