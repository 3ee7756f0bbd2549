package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxbridge/wxbridge/internal/embednats"
	"github.com/wxbridge/wxbridge/wechat"
)

// gathered is every sample of reg, as "name{label=value,...}" -> value.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out
}

func TestTokenFetchFailuresMetric(t *testing.T) {
	f := newTokenFailures()
	reg := prometheus.NewRegistry()
	reg.MustRegister(f.vec)
	api := &wechat.APIError{Code: 40125, Msg: "invalid appsecret", Path: "/cgi-bin/stable_token"}
	f.observe("main", fmt.Errorf("fetch access token for wx1: %w", api))
	f.observe("main", fmt.Errorf("fetch access token for wx1: %w", api))
	f.observe("main", errors.New("fetch access token for wx1: connection refused"))
	f.observe("oa", fmt.Errorf("fetch: %w", &wechat.APIError{Code: -1}))
	want := map[string]float64{
		"wxbridge_token_fetch_failures_total{app=main,errcode=40125}":   2,
		"wxbridge_token_fetch_failures_total{app=main,errcode=network}": 1,
		"wxbridge_token_fetch_failures_total{app=oa,errcode=-1}":        1,
	}
	got := gathered(t, reg)
	if len(got) != len(want) {
		t.Errorf("series %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// The backlog is the consumer's as the server sees it: not yet delivered,
// and delivered but not acked. When the consumer cannot be read the
// series are left out, not frozen at their last value.
func TestConsumerBacklogMetrics(t *testing.T) {
	_, nc := embednats.ForTest(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{Durable: "wxbridge", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, "events.x", fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	b := newConsumerBacklog(js, "EVENTS", "wxbridge", slog.New(slog.DiscardHandler))
	b.maxAge = 0 // read afresh at each gather
	reg := prometheus.NewRegistry()
	reg.MustRegister(b)
	check := func(when string, pending, ackPending float64) {
		t.Helper()
		got := gathered(t, reg)
		if got["wxbridge_consumer_pending{}"] != pending || got["wxbridge_consumer_ack_pending{}"] != ackPending || len(got) != 2 {
			t.Errorf("%s: %v, want pending %v and ack pending %v", when, got, pending, ackPending)
		}
	}
	check("nothing delivered", 3, 0)

	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(waitLimit))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		_ = m // held, not acked
	}
	check("one delivered, not acked", 2, 1)

	if err := js.DeleteConsumer(ctx, "EVENTS", "wxbridge"); err != nil {
		t.Fatal(err)
	}
	b.timeout = 5 * time.Second
	if got := gathered(t, reg); len(got) != 0 {
		t.Errorf("with no consumer to read, /metrics shows %v", got)
	}
}
