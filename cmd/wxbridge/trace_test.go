package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/storage"
)

// An event that comes with a traceparent is handled in that trace: its
// handling, each recipient, the state, the WeChat call and the result's
// publication are spans of it, and both results carry its trace id and a
// traceparent header that continues it.
func TestEventTraceFollowsTheEvent(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	h := flow(t, func(c *serveConfig) { c.Bridge.Tracer = tp })
	for _, u := range []string{"u1", "u2"} {
		h.bind(u, "o-"+u)
		h.grant(u, "o-"+u, tplNotice, 1)
	}
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"u1", "u2"} {
		h.request("wxbridge.cmd.roles", bridge.RolesRequest{UserID: u, Grant: []storage.Role{{Role: "member", Scope: "team:t"}}}, &bridge.OKReply{})
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	js, _ := jetstream.New(h.nc)
	m := nats.NewMsg("events.team.notice")
	m.Header.Set(nats.MsgIdHdr, "traced-1")
	m.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	m.Data = []byte(`{"team":"t","text":"hello","ref":"T"}`)
	_, err := js.PublishMsg(context.Background(), m)
	check(err)

	var results []bridge.Result
	var headers []nats.Header
	readStream(t, h.nc, "wxbridge.results.>", func(int) bool {
		sent := 0
		for _, r := range results {
			if r.EventID == "traced-1" && r.Status == "sent" {
				sent++
			}
		}
		return sent == 2
	}, func(msg jetstream.Msg) {
		var r bridge.Result
		_ = json.Unmarshal(msg.Data(), &r)
		results = append(results, r)
		headers = append(headers, msg.Headers())
	}, func() { results, headers = nil, nil })
	for i, r := range results {
		if r.EventID != "traced-1" || r.Status != "sent" {
			continue
		}
		if r.TraceID != traceID {
			t.Errorf("result for %s carries trace id %q, want %s", r.UserID, r.TraceID, traceID)
		}
		if tp := headers[i].Get("traceparent"); !strings.HasPrefix(tp, "00-"+traceID+"-") {
			t.Errorf("result for %s has traceparent %q", r.UserID, tp)
		}
	}
	// The spans land when they end: the publication's after the result.
	want := map[string]int{"wxbridge.event": 1, "wxbridge.match": 1, "wxbridge.recipient": 2, "wxbridge.store.lookup": 2,
		"wxbridge.store.reserve": 2, "wechat.subscribe.send": 2, "wxbridge.store.complete": 2, "wxbridge.result.publish": 2}
	var got map[string]int
	deadline := time.Now().Add(waitLimit)
	for {
		if spansDone := func() bool {
			got = map[string]int{}
			for _, s := range rec.Ended() {
				if s.SpanContext().TraceID().String() != traceID {
					continue
				}
				got[s.Name()]++
			}
			for name, n := range want {
				if got[name] < n {
					return false
				}
			}
			return true
		}(); spansDone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spans of the trace: %v, want at least %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range rec.Ended() {
		for _, a := range s.Attributes() {
			if v := a.Value.Emit(); strings.Contains(v, flowSecret) || strings.Contains(v, flowAESKey) {
				t.Fatalf("span %s attribute %s holds a secret", s.Name(), a.Key)
			}
		}
	}
}
