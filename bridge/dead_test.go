package bridge

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// A dead letter never fails for size: cut to fit the server's limit, it
// says what was cut and where the original is. Headers that would steer
// the publish or pose as the bridge's own are not copied.
func TestDeadMessageFitsTheServer(t *testing.T) {
	const limit = 64 << 10
	r := raw("events.x", strings.Repeat("x", 1<<20),
		"Nats-Expected-Stream", "NOPE", "wxbridge-error", "forged", "Wxbridge-Stream-Seq", "1", "Nats-Msg-Id", "orig-1", "X-Big", strings.Repeat("h", 40<<10))
	m := deadMessage("wxbridge.dead", "EVENTS", r, strings.Repeat("why ", 1000), limit)
	if size := len(m.Data) + headerSize(m.Header); size > limit {
		t.Fatalf("dead letter of %d bytes, over the %d limit", size, limit)
	}
	if !strings.Contains(m.Header.Get(hdrTruncated), "seq 42 of EVENTS") || m.Header.Get(hdrStreamSeq) != "42" {
		t.Fatalf("no truncation marker or sequence: %v", m.Header)
	}
	for k := range m.Header {
		if strings.EqualFold(k, "Nats-Expected-Stream") || k == "wxbridge-error" || k == "X-Big" {
			t.Fatalf("header %s copied: %v", k, m.Header[k])
		}
	}
	if m.Header.Get(hdrOriginalID) != "orig-1" || m.Header.Get(nats.MsgIdHdr) != "dead:EVENTS:42" {
		t.Fatalf("ids: %v", m.Header)
	}
	if len(m.Header.Get(hdrError)) > maxErrorHeader {
		t.Fatalf("reason of %d bytes", len(m.Header.Get(hdrError)))
	}
	// A small one is copied whole.
	small := deadMessage("wxbridge.dead", "EVENTS", raw("events.x", `{"a":1}`, "X-Tag", "t"), "bad", limit)
	if string(small.Data) != `{"a":1}` || small.Header.Get("X-Tag") != "t" || small.Header.Get(hdrTruncated) != "" {
		t.Fatalf("small dead letter: %q %v", small.Data, small.Header)
	}
}

// An event the server stops delivering because it reached MaxDeliver lands
// in the dead-letter subject through JetStream's advisory, kept in a stream
// so that no bridge needs to be listening at that moment.
func TestMaxDeliveriesAdvisoryDeadLetters(t *testing.T) {
	rig := newPullRig(t, 1000)
	cfg := Config{Conn: rig.nc, MaxDeliver: 2, MaxAttempts: 1, Registry: prometheus.NewRegistry()}
	cfg.setDefaults()
	b := &Bridge{cfg: cfg, log: slog.New(slog.DiscardHandler), metrics: newMetrics(cfg.Registry), repeats: newRepeatLimiter(time.Minute, time.Now), tracer: cfg.Tracer.Tracer("")}
	ctx := context.Background()
	if err := rig.js.DeleteConsumer(ctx, "EVENTS", "wxbridge"); err != nil {
		t.Fatal(err)
	}
	if err := b.provision(ctx); err != nil {
		t.Fatal(err)
	}
	ack, err := rig.js.Publish(ctx, "events.poison", []byte(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	// Another bridge fails it every time, until the server gives up.
	cons, err := rig.js.Consumer(ctx, "EVENTS", "wxbridge")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
		_ = msg.Nak()
	}
	// The server notices the limit when it would deliver again.
	if msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second)); err == nil {
		t.Fatalf("delivered a third time (seq %s)", msg.Subject())
	}
	// Only now does a bridge read the advisories.
	stop, err := b.consumeAdvisories(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	dead, err := rig.js.OrderedConsumer(ctx, "WXBRIDGE", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"wxbridge.dead"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := dead.Next(jetstream.FetchMaxWait(20 * time.Second))
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	if !strings.Contains(m.Headers().Get(hdrError), "delivered 2 times") || m.Headers().Get(hdrStreamSeq) != "1" ||
		string(m.Data()) != `{"x":1}` || ack.Sequence != 1 {
		t.Fatalf("dead letter %v %q", m.Headers(), m.Data())
	}
}
