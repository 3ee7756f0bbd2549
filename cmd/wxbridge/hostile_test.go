package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/bridge"
)

// hostile is an event published the way an attacker or a careless producer
// would, and what must come of it: a dead letter whose reason mentions
// dead, or results for its event id with the given statuses/reasons.
type hostile struct {
	name    string
	subject string
	header  nats.Header
	body    []byte
	dead    string
	// id and results: the event's id and "status/reason" of each result.
	id      string
	results []string
}

func hostileEvents() []hostile {
	ce := func(id, typ, data string) []byte {
		return []byte(`{"specversion":"1.0","id":"` + id + `","source":"/hostile","type":"` + typ + `","data":` + data + `}`)
	}
	hdr := func(kv ...string) nats.Header {
		h := nats.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = append(h[kv[i]], kv[i+1])
		}
		return h
	}
	return []hostile{
		{name: "an id of 40,000 characters", subject: "events.notice.posted", header: hdr("Nats-Msg-Id", strings.Repeat("i", 40000)),
			body: []byte(`{"user_id":"u1","text":"x","ref":"1"}`), dead: "over the 256 byte limit"},
		{name: "a CloudEvent id of 40,000 characters", subject: "events.x", body: ce(strings.Repeat("c", 40000), "notice.posted", `{}`),
			dead: "over the 256 byte limit"},
		{name: "an 8 MiB body", subject: "events.notice.posted", body: []byte(`{"pad":"` + strings.Repeat("x", 8<<20-4096) + `"}`),
			dead: "byte limit"},
		{name: "JSON nested 20,000 deep", subject: "events.notice.posted",
			body: []byte(strings.Repeat("[", 20000) + strings.Repeat("]", 20000)), dead: "JSON"},
		{name: "invalid UTF-8 in the body", subject: "events.notice.posted", body: []byte("{\"user_id\":\"u1\xff\xfe\"}"), dead: "not JSON"},
		{name: "invalid UTF-8 in the id", subject: "events.notice.posted", header: hdr("Nats-Msg-Id", "id-\xff"),
			body: []byte(`{"user_id":"u1"}`), dead: "not UTF-8"},
		{name: "conflicting CloudEvents ids", subject: "events.x", header: hdr("ce-specversion", "1.0", "ce-type", "notice.posted", "ce-id", "a", "CE-ID", "b"),
			body: []byte(`{}`), dead: "conflicting"},
		{name: "spoofed bridge headers change nothing", subject: "events.notice.posted",
			header: hdr("Nats-Msg-Id", "spoof-1", "wxbridge-subject", "events.money.moved", "Wxbridge-Error", "x", "wxbridge-nats-msg-id", "other"),
			body:   []byte(`{"user_id":"u1","text":"spoof","ref":"s"}`), id: "spoof-1", results: []string{"sent/"}},
		{name: "a legal multi-valued header", subject: "events.notice.posted", header: hdr("Nats-Msg-Id", "multi-1", "X-Tag", "a", "X-Tag", "b"),
			body: []byte(`{"user_id":"u1","text":"multi","ref":"m"}`), id: "multi-1", results: []string{"sent/"}},
		{name: "binary mode, upper-case and percent-encoded", subject: "events.x",
			header: hdr("CE-SPECVERSION", "1.0", "CE-ID", "bin%201", "CE-TYPE", "notice.posted", "CE-SOURCE", "%2Fhostile"),
			body:   []byte(`{"user_id":"u1","text":"binary","ref":"b"}`), id: "bin 1", results: []string{"sent/"}},
		{name: "a recipient of 40,000 characters", subject: "events.x", body: ce("long-user", "notice.posted", `{"user_id":"`+strings.Repeat("u", 40000)+`","text":"x","ref":"1"}`),
			id: "long-user", results: []string{"failed/invalid_data"}},
		{name: "a recipient that renders empty", subject: "events.x", body: ce("no-user", "notice.posted", `{"text":"x","ref":"1"}`),
			id: "no-user", results: []string{"skipped/no_recipient"}},
		{name: "a role with no members", subject: "events.x", body: ce("empty-role", "team.notice", `{"team":"ghosts","lead":"u1","text":"x","ref":"1"}`),
			id: "empty-role", results: []string{"skipped/no_recipient", "sent/"}},
		{name: "100,000 recipients", subject: "events.x", body: ce("crowd", "team.notice", `{"team":"big","lead":`+crowd(100000)+`,"text":"x","ref":"1"}`),
			id: "crowd", results: append(repeat("skipped/not_bound", 50), "skipped/no_recipient", "failed/too_many_recipients")},
	}
}

func crowd(n int) string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = strconv.Quote(fmt.Sprintf("c-%d", i))
	}
	return "[" + strings.Join(ids, ",") + "]"
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// Every hostile event ends in a dead letter with its reason or in results,
// and good events published after all of them are still sent.
func TestHostileEvents(t *testing.T) {
	rules := strings.Replace(flowRules, `      - user: "{{ .data.lead }}"`, `      - users: "{{ .data.lead }}"`, 1)
	h := startHarness(t, t.TempDir(), rules, func(c *serveConfig) { c.Bridge.MaxRecipients = 50 })
	h.bind("u1", "o1")
	h.grant("u1", "o1", tplNotice, 20)
	js, _ := jetstream.New(h.nc)
	cases := hostileEvents()
	seqs := map[uint64]hostile{}
	for _, c := range cases {
		m := &nats.Msg{Subject: c.subject, Header: c.header, Data: c.body}
		ack, err := js.PublishMsg(context.Background(), m)
		if err != nil {
			t.Fatalf("%s: publish: %v", c.name, err)
		}
		seqs[ack.Sequence] = c
	}
	for i := 0; i < 5; i++ {
		h.publish("notice.posted", fmt.Sprintf("good-%d", i), map[string]any{"user_id": "u1", "text": "good", "ref": strconv.Itoa(i)})
	}

	wantDead := 0
	for _, c := range cases {
		if c.dead != "" {
			wantDead++
		}
	}
	deadBy := map[uint64]string{}
	readStream(t, h.nc, "wxbridge.dead", func(n int) bool { return n >= wantDead }, func(m jetstream.Msg) {
		seq, _ := strconv.ParseUint(m.Headers().Get("Wxbridge-Stream-Seq"), 10, 64)
		deadBy[seq] = m.Headers().Get("Wxbridge-Error")
	}, func() { clear(deadBy) })
	for seq, c := range seqs {
		if c.dead == "" {
			continue
		}
		reason, ok := deadBy[seq]
		if !ok || !strings.Contains(reason, c.dead) {
			t.Errorf("%s: dead letter %q, want one mentioning %q", c.name, reason, c.dead)
		}
		if len(reason) > 1024 {
			t.Errorf("%s: the reason echoes the input: %d bytes", c.name, len(reason))
		}
	}

	ids := []string{"good-0", "good-1", "good-2", "good-3", "good-4"}
	for _, c := range cases {
		if c.id != "" {
			ids = append(ids, c.id)
		}
	}
	var got map[string][]string
	h.waitResults(func(rs []bridge.Result) bool {
		got = map[string][]string{}
		for _, r := range rs {
			if r.Status == "delivered" || r.Status == "undelivered" {
				continue // WeChat's receipts come when they come
			}
			got[r.EventID] = append(got[r.EventID], r.Status+"/"+r.Reason)
		}
		for _, c := range cases {
			if c.id != "" && len(got[c.id]) < len(c.results) {
				return false
			}
		}
		for _, id := range ids[:5] {
			if len(got[id]) == 0 {
				return false
			}
		}
		return true
	})
	for _, c := range cases {
		if c.id == "" {
			continue
		}
		if want, have := count(c.results), count(got[c.id]); fmt.Sprint(want) != fmt.Sprint(have) {
			t.Errorf("%s: results %v, want %v", c.name, have, want)
		}
	}
	for _, id := range ids[:5] {
		if fmt.Sprint(got[id]) != "[sent/]" {
			t.Errorf("good event %s after the hostile ones: %v", id, got[id])
		}
	}
}

func count(ss []string) map[string]int {
	m := map[string]int{}
	for _, s := range ss {
		m[s]++
	}
	return m
}
