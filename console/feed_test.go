package console_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/console"
	"github.com/wxbridge/wxbridge/internal/embednats"
)

// outputStream starts an embedded NATS with the output stream as the
// bridge provisions it.
func outputStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, nc := embednats.ForTest(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "WXBRIDGE",
		Subjects: []string{"wxbridge.results.>", "wxbridge.subscriptions.>", "wxbridge.dead"}, Duplicates: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func publishJSON(t *testing.T, js jetstream.JetStream, subject, msgID string, v any) {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data, _ = json.Marshal(v)
	if msgID != "" {
		m.Header.Set(nats.MsgIdHdr, msgID)
	}
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// follow runs a model's feed until the test ends.
func follow(t *testing.T, js jetstream.JetStream, cfg console.ModelConfig) *console.Model {
	t.Helper()
	m := console.NewModel(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Follow(ctx, js, console.FeedConfig{})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return m
}

// Every bridge's console reads the one shared stream: two consoles see
// the same counts, and a result two bridges' relays both published (one
// Nats-Msg-Id) counts once. A console started later catches up from the
// stream; one on a stream with nothing for it is caught up too.
func TestFeedSharedStreamAcrossBridges(t *testing.T) {
	js := outputStream(t)
	empty := follow(t, js, console.ModelConfig{})
	waitFor(t, "a console on an empty stream to catch up", func() bool {
		s := empty.Status()
		return s.ResultsCaughtUp && s.LedgerCaughtUp
	})

	now := time.Now()
	sent := bridge.Result{EventID: "e1", EventType: "order.created", Rule: "r1", App: "main", TemplateID: "T1", UserID: "u-1", OpenID: "o-1",
		Status: "sent", Attempts: 1, At: now}
	publishJSON(t, js, "wxbridge.results.order.created", "r:1", sent)
	publishJSON(t, js, "wxbridge.results.order.created", "r:1", sent) // the other bridge's relay: dropped by JetStream
	skipped := sent
	skipped.EventID, skipped.Status, skipped.Reason = "e2", "skipped", "not_subscribed"
	publishJSON(t, js, "wxbridge.results.order.created", "r:2", skipped)
	publishJSON(t, js, "wxbridge.subscriptions.main", "s:1", bridge.SubscriptionChange{App: "main", OpenID: "o-1", UserID: "u-1", TemplateID: "T1",
		Status: "accept", Kind: "one_time", Credits: 1, Source: "client", At: now})
	dead := nats.NewMsg("wxbridge.dead")
	dead.Data = []byte("garbage")
	dead.Header.Set("Wxbridge-Error", "event body is not JSON")
	if _, err := js.PublishMsg(context.Background(), dead); err != nil {
		t.Fatal(err)
	}

	later := follow(t, js, console.ModelConfig{})
	for name, m := range map[string]*console.Model{"the first console": empty, "a console started later": later} {
		waitFor(t, name+" to read everything", func() bool {
			s := m.Status()
			return s.Results == 2 && s.Changes == 1 && s.Dead == 1 && s.ResultsCaughtUp && s.LedgerCaughtUp
		})
		s := m.Snapshot()
		if h, d := outcome(s, "r1", "sent", ""); h != 1 || d != 1 {
			t.Errorf("%s: sent hour %d day %d, want 1 1", name, h, d)
		}
		if got := m.PersonResults("u-1"); len(got) != 2 || got[0].EventID != "e2" {
			t.Errorf("%s: results of u-1 %+v", name, got)
		}
		if ts := templateStats(s, "T1"); ts.Holders != 1 || ts.Day.Granted != 1 || ts.Day.NotSubscribed != 1 {
			t.Errorf("%s: T1 %+v", name, ts)
		}
		if s.DeadDay != 1 || s.DeadLetters[0].Reason != "event body is not JSON" {
			t.Errorf("%s: dead letters %d %+v", name, s.DeadDay, s.DeadLetters)
		}
	}

	// Once caught up, what is published next reaches the live clients.
	items, _, leave, err := later.Join(console.Filter{Person: "u-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer leave()
	late := sent
	late.EventID = "e3"
	publishJSON(t, js, "wxbridge.results.order.created", "r:3", late)
	select {
	case it := <-items:
		if it.EventID != "e3" || it.Kind != "result" {
			t.Errorf("live item %+v", it)
		}
	case <-time.After(waitLimit):
		t.Fatal("a result published after catching up never reached the live client")
	}
}

// A console that reads nothing yet (the bridge has not created the stream)
// says why, and starts reading once the stream is there.
func TestFeedWaitsForStream(t *testing.T) {
	_, nc := embednats.ForTest(t)
	js, _ := jetstream.New(nc)
	m := follow(t, js, console.ModelConfig{})
	waitFor(t, "the missing stream to be reported", func() bool { return m.Status().LastErr != "" })
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "WXBRIDGE",
		Subjects: []string{"wxbridge.results.>", "wxbridge.subscriptions.>", "wxbridge.dead"}}); err != nil {
		t.Fatal(err)
	}
	publishJSON(t, js, "wxbridge.results.x", "", bridge.Result{EventID: "e1", Rule: "r1", UserID: "u-1", Status: "sent", At: time.Now()})
	waitFor(t, "the result once the stream exists", func() bool { return m.Status().Results == 1 && m.Status().LastErr == "" })
}
