package main

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxbridge/wxbridge/wechat"
)

// The series serve adds to the bridge's own: their sources are outside the
// bridge (the WeChat client's token fetches, the event consumer's state on
// the server). deploy/ alerts on both.

// tokenFailures counts failed access-token fetches, by app and errcode.
type tokenFailures struct{ vec *prometheus.CounterVec }

func newTokenFailures() *tokenFailures {
	return &tokenFailures{vec: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxbridge_token_fetch_failures_total",
		Help: "Access-token fetches (stable_token or token) that failed, by app and WeChat errcode (network: no usable answer). No token, no sends."},
		[]string{"app", "errcode"})}
}

// observe is the WeChat client's TokenFetchFailed hook. The errcodes are
// WeChat's few token-endpoint answers, so the label stays small.
func (f *tokenFailures) observe(app string, err error) {
	code := "network"
	var api *wechat.APIError
	if errors.As(err, &api) {
		code = strconv.Itoa(api.Code)
	}
	f.vec.WithLabelValues(app, code).Inc()
}

// consumerBacklog exposes the event consumer's backlog as the server sees
// it: events not yet delivered (wxbridge_consumer_pending) and delivered
// but not yet acked (wxbridge_consumer_ack_pending). The consumer is shared
// by all bridges, so every bridge reports the same values (deploy/ takes
// their max).
//
// It reads the consumer's info when scraped rather than on a timer: no
// goroutine to own, and no request to the server when nobody scrapes. A
// read is bounded by timeout and its answer kept for maxAge, so scrapes
// close together (several Prometheus servers) cost one request. When the
// server does not answer, the two series are left out rather than showing
// an old backlog as the current one; /readyz says why.
type consumerBacklog struct {
	js               jetstream.JetStream
	stream, consumer string
	timeout, maxAge  time.Duration
	log              *slog.Logger

	pending, ackPending *prometheus.Desc

	mu     sync.Mutex // held during a read: concurrent scrapes share it
	readAt time.Time
	info   *jetstream.ConsumerInfo // nil: the last read failed
}

func newConsumerBacklog(js jetstream.JetStream, stream, consumer string, log *slog.Logger) *consumerBacklog {
	return &consumerBacklog{js: js, stream: stream, consumer: consumer, timeout: 2 * time.Second, maxAge: 5 * time.Second, log: log,
		pending: prometheus.NewDesc("wxbridge_consumer_pending",
			"Events in the event stream the durable consumer has not delivered yet (ConsumerInfo.NumPending), shared by all bridges.", nil, nil),
		ackPending: prometheus.NewDesc("wxbridge_consumer_ack_pending",
			"Events delivered by the durable consumer and not yet acked (ConsumerInfo.NumAckPending), shared by all bridges.", nil, nil),
	}
}

func (c *consumerBacklog) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.ackPending
}

func (c *consumerBacklog) Collect(ch chan<- prometheus.Metric) {
	info := c.read()
	if info == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumPending))
	ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(info.NumAckPending))
}

// read returns the consumer's info, at most maxAge old, or nil.
func (c *consumerBacklog) read() *jetstream.ConsumerInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.readAt.IsZero() && time.Since(c.readAt) < c.maxAge {
		return c.info
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	// Looking the consumer up fetches its info: one request.
	cons, err := c.js.Consumer(ctx, c.stream, c.consumer)
	first := c.readAt.IsZero()
	c.readAt = time.Now()
	if err != nil {
		if c.info != nil || first { // once per outage
			c.log.Warn("cannot read the event consumer's backlog for /metrics", "stream", c.stream, "consumer", c.consumer, "err", err)
		}
		c.info = nil
		return nil
	}
	c.info = cons.CachedInfo()
	return c.info
}

// serveCollectors are serve's own series, for the bridge's registry.
func (s *service) serveCollectors() []prometheus.Collector {
	out := []prometheus.Collector{s.tokenFailures.vec}
	js, err := jetstream.New(s.nc)
	if err != nil { // only for bad options, and there are none
		s.log.Warn("no event backlog on /metrics", "err", err)
		return out
	}
	n := s.bridge.Names()
	return append(out, newConsumerBacklog(js, n.EventStream, n.Consumer, s.log))
}
