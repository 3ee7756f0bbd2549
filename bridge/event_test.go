package bridge

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// raw builds a delivery of an event: headers given as name, value pairs
// (a name may repeat).
func raw(subject, body string, headers ...string) *rawEvent {
	h := nats.Header{}
	for i := 0; i+1 < len(headers); i += 2 {
		h[headers[i]] = append(h[headers[i]], headers[i+1])
	}
	return &rawEvent{subject: subject, header: h, data: []byte(body), streamSeq: 42, delivered: 1,
		published: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)}
}

func testBridge(t *testing.T) *Bridge {
	t.Helper()
	cfg := Config{}
	cfg.setDefaults()
	cfg.MaxEventBytes = 1 << 20
	return &Bridge{cfg: cfg}
}

func TestDecodeEvent(t *testing.T) {
	b := testBridge(t)
	b.cfg.MaxEventBytes = 1024
	cases := []struct {
		name    string
		subject string
		body    string
		headers []string
		// want: id, type, identity key and a data field; or a dead-letter reason
		wantID, wantType, wantKey, wantAmount string
		dead                                  string
	}{
		{name: "plain payload: type from subject, id from the stream sequence",
			subject: "events.order.created", body: `{"amount": 12.50}`, wantID: "seq:42", wantType: "order.created", wantAmount: "12.50"},
		{name: "Nats-Msg-Id is the id", subject: "events.order.created", body: `{"amount": 1}`,
			headers: []string{"Nats-Msg-Id", "ord-7"}, wantID: "ord-7", wantType: "order.created", wantAmount: "1"},
		{name: "structured CloudEvent: source and id are its identity", subject: "events.whatever",
			body:   `{"specversion":"1.0","id":"ce-1","type":"statement.issued","source":"/billing","time":"2026-11-01T09:00:00+08:00","data":{"amount":99}}`,
			wantID: "ce-1", wantType: "statement.issued", wantKey: "/billing\x1fce-1", wantAmount: "99"},
		{name: "CloudEvent id wins over Nats-Msg-Id", subject: "events.x",
			body: `{"specversion":"1.0","id":"ce-2","type":"t","data":{"amount":1}}`, headers: []string{"Nats-Msg-Id", "other"},
			wantID: "ce-2", wantType: "t", wantAmount: "1"},
		{name: "CloudEvent data_base64", subject: "events.x",
			body:   `{"specversion":"1.0","id":"ce-3","type":"t","data_base64":"eyJhbW91bnQiOjV9"}`,
			wantID: "ce-3", wantType: "t", wantAmount: "5"},
		{name: "binary-mode CloudEvent", subject: "events.x", body: `{"amount":3}`,
			headers: []string{"ce-specversion", "1.0", "ce-id", "bin-1", "ce-type", "meeting.booked", "ce-source", "/rooms"},
			wantID:  "bin-1", wantType: "meeting.booked", wantKey: "/rooms\x1fbin-1", wantAmount: "3"},
		{name: "binary mode: header names in any case", subject: "events.x", body: `{"amount":3}`,
			headers: []string{"CE-SPECVERSION", "1.0", "CE-ID", "bin-2", "Ce-Type", "com.example.order.created", "ce-Source", "urn:x"},
			wantID:  "bin-2", wantType: "com.example.order.created", wantKey: "urn:x\x1fbin-2", wantAmount: "3"},
		{name: "binary mode: values are percent-decoded", subject: "events.x", body: `{"amount":4}`,
			headers: []string{"ce-specversion", "1.0", "ce-id", "a%20b%2Fc", "ce-type", "t%2Ex", "ce-source", "%E8%AE%A2%E5%8D%95"},
			wantID:  "a b/c", wantType: "t.x", wantKey: "订单\x1fa b/c", wantAmount: "4"},
		{name: "a header named like the bridge's own changes nothing", subject: "events.order.created", body: `{"amount": 1}`,
			headers: []string{"wxbridge-subject", "events.admin.reset", "Wxbridge-Stream-Seq", "1", "wxbridge-nats-msg-id", "x"},
			wantID:  "seq:42", wantType: "order.created", wantAmount: "1"},
		{name: "a legal multi-valued header is no reason to refuse", subject: "events.t", body: `{"amount": 2}`,
			headers: []string{"X-Tag", "a", "X-Tag", "b", "ce-specversion", "1.0", "ce-specversion", "1.0", "ce-id", "m", "ce-type", "t"},
			wantID:  "m", wantType: "t", wantAmount: "2"},
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
		{name: "two different ids", subject: "events.t", body: `{}`, headers: []string{"ce-specversion", "1.0", "ce-type", "t", "ce-id", "a", "CE-ID", "b"}, dead: "conflicting"},
		{name: "NUL in the id", subject: "events.t", body: `{}`, headers: []string{"Nats-Msg-Id", "a\x00b"}, dead: "control character"},
		{name: "an id of 40,000 characters", subject: "events.t", body: `{}`, headers: []string{"Nats-Msg-Id", strings.Repeat("i", 40000)}, dead: "over the 256 byte limit"},
		{name: "a source of 40,000 characters", subject: "events.t", body: `{"specversion":"1.0","id":"x","type":"t","source":"` + strings.Repeat("s", 900) + `"}`, dead: "over the 512 byte limit"},
		{name: "an id that is not UTF-8", subject: "events.t", body: `{}`, headers: []string{"Nats-Msg-Id", "\xff\xfe"}, dead: "not UTF-8"},
		{name: "bad percent-encoding", subject: "events.t", body: `{}`, headers: []string{"ce-specversion", "1.0", "ce-type", "t", "ce-id", "%zz"}, dead: "percent-encoding"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := b.decodeEvent(raw(tc.subject, tc.body, tc.headers...))
			if tc.dead != "" {
				be, ok := err.(*badEvent)
				if !ok || !strings.Contains(be.reason, tc.dead) {
					t.Fatalf("got %v (%T), want a dead letter mentioning %q", err, err, tc.dead)
				}
				if len(be.reason) > 300 {
					t.Fatalf("the reason echoes the input back: %d bytes", len(be.reason))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.ID != tc.wantID || ev.Type != tc.wantType {
				t.Fatalf("id %q type %q, want %q %q", ev.ID, ev.Type, tc.wantID, tc.wantType)
			}
			wantKey := tc.wantKey
			if wantKey == "" {
				wantKey = tc.wantID
			}
			if ev.key != wantKey {
				t.Fatalf("identity %q, want %q", ev.key, wantKey)
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

// Two producers that both number their events from 1 are two events; an
// event already in the stream when the state was upgraded keeps the id it
// was recorded under.
func TestCloudEventIdentity(t *testing.T) {
	b := testBridge(t)
	key := func(r *rawEvent) string {
		t.Helper()
		ev, err := b.decodeEvent(r)
		if err != nil {
			t.Fatal(err)
		}
		return ev.key
	}
	a := key(raw("events.x", `{"specversion":"1.0","id":"1","type":"t","source":"/billing"}`))
	c := key(raw("events.x", `{"specversion":"1.0","id":"1","type":"t","source":"/shipping"}`))
	if a == c {
		t.Fatalf("events 1 of two sources share identity %q", a)
	}
	b.cfg.LegacyIDsBefore = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	if old := key(raw("events.x", `{"specversion":"1.0","id":"1","type":"t","source":"/billing"}`)); old != "1" {
		t.Fatalf("an event published before the upgrade: identity %q, want its id alone", old)
	}
	late := raw("events.x", `{"specversion":"1.0","id":"1","type":"t","source":"/billing"}`)
	late.published = b.cfg.LegacyIDsBefore
	if got := key(late); got != a {
		t.Fatalf("an event published after the upgrade: identity %q, want %q", got, a)
	}
	if src, id := splitEventKey(a); src != "/billing" || id != "1" {
		t.Fatalf("split %q: %q %q", a, src, id)
	}
}

func TestCloudEventTimeIsTheEventTime(t *testing.T) {
	ev, err := testBridge(t).decodeEvent(raw("events.x", `{"specversion":"1.0","id":"a","type":"t","time":"2026-11-01T09:00:00+08:00"}`))
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
		f.Add("events.t", s, "ce-id", "x")
	}
	b := &Bridge{}
	b.cfg.setDefaults()
	f.Fuzz(func(t *testing.T, subject, body, hk, hv string) {
		ev, err := b.decodeEvent(raw(subject, body, hk, hv, "ce-specversion", "1.0", "ce-type", hv))
		if err == nil && (ev.ID == "" || ev.Type == "" || ev.key == "") {
			t.Fatalf("decoded an event without id, type or identity: %+v", ev)
		}
		if err == nil && len(ev.key) > MaxSourceBytes+MaxEventIDBytes+1 {
			t.Fatalf("identity of %d bytes", len(ev.key))
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
