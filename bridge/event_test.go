package bridge

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

func delivery(subject, body string, md map[string]string) *message.Message {
	m := message.NewMessage("1.1", []byte(body))
	m.Metadata = message.Metadata{mdSubject: subject, mdStreamSeq: "42", mdDelivered: "1",
		mdPublished: "2026-11-21T10:00:00Z"}
	for k, v := range md {
		m.Metadata.Set(k, v)
	}
	return m
}

func testBridge(t *testing.T) *Bridge {
	t.Helper()
	cfg := Config{}
	cfg.setDefaults()
	cfg.MaxEventBytes = 1024
	return &Bridge{cfg: cfg}
}

func TestDecodeEvent(t *testing.T) {
	b := testBridge(t)
	cases := []struct {
		name    string
		subject string
		body    string
		md      map[string]string
		// want: id, type, and a data field; or a dead-letter reason
		wantID, wantType, wantAmount string
		dead                         string
	}{
		{name: "plain payload: type from subject, id from the stream sequence",
			subject: "events.order.created", body: `{"amount": 12.50}`, wantID: "seq:42", wantType: "order.created", wantAmount: "12.50"},
		{name: "Nats-Msg-Id is the id", subject: "events.order.created", body: `{"amount": 1}`,
			md: map[string]string{mdMsgID: "ord-7"}, wantID: "ord-7", wantType: "order.created", wantAmount: "1"},
		{name: "structured CloudEvent", subject: "events.whatever",
			body:   `{"specversion":"1.0","id":"ce-1","type":"statement.issued","source":"/billing","time":"2026-11-01T09:00:00+08:00","data":{"amount":99}}`,
			wantID: "ce-1", wantType: "statement.issued", wantAmount: "99"},
		{name: "CloudEvent id wins over Nats-Msg-Id", subject: "events.x",
			body: `{"specversion":"1.0","id":"ce-2","type":"t","data":{"amount":1}}`, md: map[string]string{mdMsgID: "other"},
			wantID: "ce-2", wantType: "t", wantAmount: "1"},
		{name: "CloudEvent data_base64", subject: "events.x",
			body:   `{"specversion":"1.0","id":"ce-3","type":"t","data_base64":"eyJhbW91bnQiOjV9"}`,
			wantID: "ce-3", wantType: "t", wantAmount: "5"},
		{name: "binary-mode CloudEvent", subject: "events.x", body: `{"amount":3}`,
			md:     map[string]string{"ce-specversion": "1.0", "ce-id": "bin-1", "ce-type": "meeting.booked"},
			wantID: "bin-1", wantType: "meeting.booked", wantAmount: "3"},
		{name: "19-digit numbers stay exact", subject: "events.t", body: `{"amount": 1864323726461255680}`,
			wantID: "seq:42", wantType: "t", wantAmount: "1864323726461255680"},

		{name: "not JSON", subject: "events.t", body: `amount=3`, dead: "not JSON"},
		{name: "empty", subject: "events.t", body: ``, dead: "empty"},
		{name: "JSON with trailing garbage", subject: "events.t", body: `{"a":1} x`, dead: "not JSON"},
		{name: "no type: subject outside the prefix", subject: "other.t", body: `{}`, dead: "no type"},
		{name: "no type: subject is the bare prefix", subject: "events.", body: `{}`, dead: "no type"},
		{name: "CloudEvent without a type", subject: "events.t", body: `{"specversion":"1.0","id":"x"}`, dead: "no type"},
		{name: "CloudEvent with a bad time", subject: "events.t", body: `{"specversion":"1.0","id":"x","type":"t","time":"yesterday"}`, dead: "RFC 3339"},
		{name: "CloudEvent data_base64 not base64", subject: "events.t", body: `{"specversion":"1.0","type":"t","data_base64":"%%%"}`, dead: "data_base64"},
		{name: "too large", subject: "events.t", body: `{"pad":"` + strings.Repeat("x", 2000) + `"}`, dead: "over the 1024 byte limit"},
		{name: "a header sent twice", subject: "events.t", body: `{}`, md: map[string]string{mdHeaderErr: `header "X" has 2 values`}, dead: "bad NATS headers"},
		{name: "NUL in the id", subject: "events.t", body: `{}`, md: map[string]string{mdMsgID: "a\x00b"}, dead: "NUL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := b.decodeEvent(delivery(tc.subject, tc.body, tc.md))
			if tc.dead != "" {
				be, ok := err.(*badEvent)
				if !ok || !strings.Contains(be.reason, tc.dead) {
					t.Fatalf("got %v (%T), want a dead letter mentioning %q", err, err, tc.dead)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.ID != tc.wantID || ev.Type != tc.wantType {
				t.Fatalf("id %q type %q, want %q %q", ev.ID, ev.Type, tc.wantID, tc.wantType)
			}
			data, _ := ev.Data.(map[string]any)
			if n, _ := data["amount"].(json.Number); string(n) != tc.wantAmount {
				t.Fatalf("amount %v (%T), want %s", data["amount"], data["amount"], tc.wantAmount)
			}
			if ev.Time.IsZero() || ev.Subject != tc.subject {
				t.Fatalf("time %v subject %q", ev.Time, ev.Subject)
			}
		})
	}
}

func TestCloudEventTimeIsTheEventTime(t *testing.T) {
	ev, err := testBridge(t).decodeEvent(delivery("events.x", `{"specversion":"1.0","id":"a","type":"t","time":"2026-11-01T09:00:00+08:00"}`, nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 1, 1, 0, 0, 0, time.UTC); !ev.Time.Equal(want) {
		t.Fatalf("time %v, want %v", ev.Time, want)
	}
}

func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{`{}`, `{"specversion":"1.0","id":"x","type":"t","data":{"a":[1,2]}}`, `[1,2,3]`, `"x"`, `null`,
		`{"specversion":"1.0","data_base64":"e30="}`, "\x00\xff"} {
		f.Add("events.t", s)
	}
	b := &Bridge{}
	b.cfg.setDefaults()
	f.Fuzz(func(t *testing.T, subject, body string) {
		ev, err := b.decodeEvent(delivery(subject, body, nil))
		if err == nil && (ev.ID == "" || ev.Type == "") {
			t.Fatalf("decoded an event without id or type: %+v", ev)
		}
	})
}

func TestSubjectToken(t *testing.T) {
	for in, want := range map[string]string{
		"order.created": "order.created",
		"a b":           "a_b",
		"x.*.y":         "x._.y",
		"x.>":           "x._",
		".lead":         "lead",
		"a..b":          "a._.b",
		"":              "_",
	} {
		if got := subjectToken(in); got != want {
			t.Errorf("subjectToken(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBackoffGrowsWithJitterAndIsCapped(t *testing.T) {
	d := backoff{base: time.Second, max: 30 * time.Second}
	for n, want := range map[uint64]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 5: 16 * time.Second, 9: 30 * time.Second, 60: 30 * time.Second} {
		for i := 0; i < 50; i++ {
			got := d.WaitTime(n)
			if got < want*8/10 || got > want*12/10 {
				t.Fatalf("delay after delivery %d: %v, want %v ±20%%", n, got, want)
			}
		}
	}
}

func TestKeyedMutexSerialisesOneKeyOnly(t *testing.T) {
	k := keyedMutex{m: map[string]*keyedEntry{}}
	unlockA := k.lock("a")
	got := make(chan string, 2)
	go func() { u := k.lock("b"); got <- "b"; u() }()
	go func() { u := k.lock("a"); got <- "a"; u() }()
	if first := <-got; first != "b" {
		t.Fatalf("%q ran while its key was held", first)
	}
	unlockA()
	if second := <-got; second != "a" {
		t.Fatalf("second: %q", second)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.m) != 0 {
		t.Fatalf("entries left behind: %v", k.m)
	}
}
