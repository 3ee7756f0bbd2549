package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/bridge"
)

const testRules = `
apps:
  main:
    appid: wx00000000000000e2
    secret: e2e-secret
    state: formal
    lang: zh_CN
templates:
  statement_issued:
    app: main
    id: TPL_statement_issued
    kind: one_time
    keywords: {thing1: thing, thing2: thing, character_string3: character_string, time4: time}
rules:
  - name: statement-to-applicant
    on: statement.issued
    template: statement_issued
    page: pages/statement/detail?id={{ .data.statement_id }}
    to:
      - user: "{{ .data.applicant_id }}"
    data:
      thing1: "{{ .data.buyer_name }}"
      thing2: "{{ .data.seller_name }}"
      character_string3: "{{ .data.month }}"
      time4: "{{ .data.created_at }}"
`

// waitLimit bounds how long a test waits for something that should
// happen (the bridge ready, a result, a reply). Generous, because the
// machine running the tests may be loaded (race detector, 2 shared cores);
// a test that passes never waits it out.
const waitLimit = 30 * time.Second

// harness is a whole wxbridge (embedded NATS, bbolt, emulator, bridge)
// running in-process, as `serve --emulator` runs it.
type harness struct {
	t    *testing.T
	svc  *service
	nc   *nats.Conn
	stop func()
}

func startHarness(t *testing.T, dir, rulesSrc string, opts ...func(*serveConfig)) *harness {
	t.Helper()
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(rulesSrc), 0o600); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := serveConfig{RulesPath: rulesPath, DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0", Emulator: true,
		PushMode: "safe", PushFormat: "json", ReloadEvery: 50 * time.Millisecond,
		Logger: logger, Bridge: bridge.Config{ShutdownGrace: 5 * time.Second, RetryBase: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond}}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := startService(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("start service: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.run(ctx) }()
	deadline := time.Now().Add(waitLimit)
	for !svc.bridge.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("bridge not ready after %s", waitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	nc, err := svc.ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, svc: svc, nc: nc}
	var stopped bool
	h.stop = func() {
		if stopped {
			return
		}
		stopped = true
		nc.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service stopped with %v", err)
		}
	}
	t.Cleanup(h.stop)
	return h
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// request sends a command and decodes the reply into out.
func (h *harness) request(subject string, body any, out any) {
	h.t.Helper()
	data, _ := json.Marshal(body)
	msg, err := h.nc.Request(subject, data, waitLimit)
	if err != nil {
		h.t.Fatalf("request %s: %v", subject, err)
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		h.t.Fatalf("reply to %s: %v: %s", subject, err, msg.Data)
	}
}

func (h *harness) publish(typ, id string, data any) {
	h.t.Helper()
	js, _ := jetstream.New(h.nc)
	m := nats.NewMsg("events." + typ)
	m.Data, _ = json.Marshal(data)
	if id != "" {
		m.Header.Set(nats.MsgIdHdr, id)
	}
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		h.t.Fatalf("publish: %v", err)
	}
}

// results reads every result published so far, waiting until at least n
// have arrived.
func (h *harness) results(n int) []bridge.Result {
	h.t.Helper()
	return readResults(h.t, h.nc, n)
}

// readResults reads the results stream from the start until it holds at
// least n results.
func readResults(t *testing.T, nc *nats.Conn, n int) []bridge.Result {
	t.Helper()
	var out []bridge.Result
	readStream(t, nc, "wxbridge.results.>", func(out2 int) bool { return out2 >= n }, func(m jetstream.Msg) {
		var r bridge.Result
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			t.Fatalf("result payload: %v", err)
		}
		out = append(out, r)
	}, func() { out = out[:0] })
	return out
}

// readStream reads the output stream's messages on subject from the start
// and keeps reading new ones until enough says the count read is enough
// (or waitLimit passes). reset is called once, before the first message.
func readStream(t *testing.T, nc *nats.Conn, subject string, enough func(int) bool, each func(jetstream.Msg), reset func()) {
	t.Helper()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "WXBRIDGE", jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	reset()
	n := 0
	for {
		for {
			msgs, err := cons.FetchNoWait(500)
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for m := range msgs.Messages() {
				got++
				n++
				each(m)
			}
			if got == 0 {
				break
			}
		}
		if enough(n) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waited for messages on %s, have %d", subject, n)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestEndToEndSendAndNotBound(t *testing.T) {
	backends(t, func(t *testing.T, opt func(*serveConfig)) {
		h := startHarness(t, t.TempDir(), testRules, opt)
		emu := h.svc.emu
		const appid, tpl = "wx00000000000000e2", "TPL_statement_issued"

		var bind bridge.BindReply
		h.request("wxbridge.cmd.bind", map[string]string{"app": "main", "user_id": "u-17", "openid": "o-alice"}, &bind)
		if bind.Error != "" || bind.OpenID != "o-alice" {
			t.Fatalf("bind reply %+v", bind)
		}
		// The user accepts the template once: WeChat (the emulator) and the
		// ledger (through the client report) both learn it.
		emu.Accept(appid, "o-alice", tpl)
		var subs bridge.SubscriptionsReply
		h.request("wxbridge.cmd.subscriptions", map[string]any{"app": "main", "user_id": "u-17", "results": map[string]string{tpl: "accept"}}, &subs)
		if subs.Error != "" || len(subs.Subscriptions) != 1 || subs.Subscriptions[0].Credits != 1 {
			t.Fatalf("subscriptions reply %+v", subs)
		}

		h.publish("statement.issued", "evt-1", map[string]any{"statement_id": "S-1", "applicant_id": "u-17",
			"buyer_name": "Acme", "seller_name": "Supplier Ltd", "month": "2026-10", "created_at": "2026-11-01 09:00"})
		h.publish("statement.issued", "evt-2", map[string]any{"statement_id": "S-2", "applicant_id": "u-404",
			"buyer_name": "Acme", "seller_name": "Supplier Ltd", "month": "2026-10", "created_at": "2026-11-01 09:00"})

		got := h.results(2)
		if len(got) != 2 {
			t.Fatalf("want 2 results, got %d: %+v", len(got), got)
		}
		byEvent := map[string]bridge.Result{}
		for _, r := range got {
			byEvent[r.EventID] = r
		}
		sent := byEvent["evt-1"]
		if sent.Status != "sent" || sent.UserID != "u-17" || sent.OpenID != "o-alice" || sent.MsgID == "" ||
			sent.Rule != "statement-to-applicant" || sent.TemplateID != tpl || sent.Attempts != 1 || sent.ErrCode != 0 {
			t.Errorf("result of evt-1: %+v", sent)
		}
		skipped := byEvent["evt-2"]
		if skipped.Status != "skipped" || skipped.Reason != "not_bound" || skipped.UserID != "u-404" {
			t.Errorf("result of evt-2: %+v", skipped)
		}

		sends := emu.Sends()
		if len(sends) != 1 {
			t.Fatalf("emulator got %d sends, want exactly 1: %+v", len(sends), sends)
		}
		s := sends[0]
		want := map[string]string{"thing1": "Acme", "thing2": "Supplier Ltd", "character_string3": "2026-10", "time4": "2026-11-01 09:00"}
		if s.ToUser != "o-alice" || s.TemplateID != tpl || s.Page != "pages/statement/detail?id=S-1" || s.State != "formal" || s.Lang != "zh_CN" {
			t.Errorf("send: %+v", s)
		}
		for k, v := range want {
			if s.Data[k] != v {
				t.Errorf("send data %s = %q, want %q", k, s.Data[k], v)
			}
		}
		if len(s.Data) != len(want) {
			t.Errorf("send data %v has extra keywords", s.Data)
		}
		if s.MsgID != sent.MsgID {
			t.Errorf("result msgid %s, emulator msgid %s", sent.MsgID, s.MsgID)
		}
	})
}

// A restarted bridge resumes its durable consumer: events it handled are
// not handled again.
func TestRestartDoesNotReplay(t *testing.T) {
	dir := t.TempDir()
	h := startHarness(t, dir, testRules)
	h.publish("statement.issued", "evt-r1", map[string]any{"applicant_id": "u-1", "statement_id": "1",
		"buyer_name": "a", "seller_name": "b", "month": "m", "created_at": "2026-11-01 09:00"})
	if got := h.results(1); len(got) != 1 {
		t.Fatalf("before restart: %d results", len(got))
	}
	h.stop()

	h = startHarness(t, dir, testRules)
	h.publish("statement.issued", "evt-r2", map[string]any{"applicant_id": "u-2", "statement_id": "2",
		"buyer_name": "a", "seller_name": "b", "month": "m", "created_at": "2026-11-01 09:00"})
	h.results(2)
	time.Sleep(300 * time.Millisecond) // a replay of evt-r1 would land by now
	got := h.results(2)
	if len(got) != 2 || got[0].EventID != "evt-r1" || got[1].EventID != "evt-r2" {
		t.Fatalf("after restart want one result per event, got %+v", got)
	}
}

// backends runs fn once per state backend, with the option that selects
// it: what the bridge promises on one it promises on the other.
func backends(t *testing.T, fn func(t *testing.T, opt func(*serveConfig))) {
	for _, store := range []string{"bbolt", "nats"} {
		t.Run(store, func(t *testing.T) {
			fn(t, func(c *serveConfig) {
				c.Store = store
				// A restart takes over its own records soon.
				c.KV.LeaseTTL = 2 * time.Second
			})
		})
	}
}
