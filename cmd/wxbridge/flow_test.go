package main

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/storagetest"
	"github.com/wxbridge/wxbridge/wechat"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

const (
	flowAppID  = "wx00000000000000f1"
	flowSecret = "flow-secret-must-never-leak"
	flowToken  = "flow-push-token"
	flowAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	tplNotice  = "TPL_notice"
	tplAlert   = "TPL_alert"
)

var flowRules = `
apps:
  main:
    appid: ` + flowAppID + `
    secret: ` + flowSecret + `
    push_token: ` + flowToken + `
    aes_key: ` + flowAESKey + `
templates:
  notice:
    app: main
    id: ` + tplNotice + `
    keywords: {thing1: thing, character_string2: character_string}
  alert:
    app: main
    id: ` + tplAlert + `
    keywords: {thing1: thing}
rules:
  - name: notice-to-user
    on: notice.posted
    template: notice
    to:
      - user: "{{ .data.user_id }}"
    data:
      thing1: "{{ .data.text }}"
      character_string2: "{{ .data.ref }}"
  - name: notice-to-team
    on: team.notice
    template: notice
    to:
      - role: member
        scope: "team:{{ .data.team }}"
      - user: "{{ .data.lead }}"
    data:
      thing1: "{{ .data.text }}"
      character_string2: "{{ .data.ref }}"
  - name: night-alert
    on: night.alert
    template: alert
    to:
      - user: "{{ .data.user_id }}"
    data:
      thing1: "{{ .data.text }}"
    quiet_hours: {window: "22:00-08:00", time_zone: Asia/Shanghai, action: defer}
  - name: at-most-once-notice
    on: money.moved
    template: notice
    delivery: at_most_once
    to:
      - user: "{{ .data.user_id }}"
    data:
      thing1: "{{ .data.text }}"
      character_string2: "{{ .data.ref }}"
`

// flow starts a harness on flowRules with the emulator pushing safe-mode
// JSON callbacks (and delivery reports) to the bridge.
func flow(t *testing.T, opts ...func(*serveConfig)) *harness {
	t.Helper()
	return startHarness(t, t.TempDir(), flowRules, opts...)
}

func (h *harness) bind(user, openid string) {
	h.t.Helper()
	var reply bridge.BindReply
	h.request("wxbridge.cmd.bind", bridge.BindRequest{App: "main", UserID: user, OpenID: openid}, &reply)
	if reply.Error != "" {
		h.t.Fatalf("bind %s: %s", user, reply.Error)
	}
}

// subscription waits until the ledger entry of openid satisfies ok.
func (h *harness) subscription(openid, tpl string, ok func(storage.Subscription) bool) storage.Subscription {
	h.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		s, _, err := h.svc.store.Subscription(context.Background(), "main", openid, tpl)
		if err != nil {
			h.t.Fatal(err)
		}
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("ledger of %s/%s never got there: %+v", openid, tpl, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// grant gives openid n one-time credits for tpl on both sides: WeChat's
// (the emulator) and the ledger's (client reports, which never pair with
// one another). Pushed popups within one second would share a dedupe key
// (FromUserName + CreateTime), as at WeChat.
func (h *harness) grant(user, openid, tpl string, n int) {
	h.t.Helper()
	before, _, _ := h.svc.store.Subscription(context.Background(), "main", openid, tpl)
	for i := 0; i < n; i++ {
		h.svc.emu.Accept(flowAppID, openid, tpl)
		var reply bridge.SubscriptionsReply
		h.request("wxbridge.cmd.subscriptions", bridge.SubscriptionsRequest{App: "main", UserID: user, Results: map[string]string{tpl: "accept"}}, &reply)
		if reply.Error != "" {
			h.t.Fatalf("report accept: %s", reply.Error)
		}
	}
	h.subscription(openid, tpl, func(s storage.Subscription) bool { return s.Credits == before.Credits+n })
}

// eventDone waits until the bridge has fully handled an event.
func (h *harness) eventDone(id string) {
	h.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		if _, done, _ := h.svc.store.EventDone(context.Background(), id); done {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("event %s was not handled", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitResults reads results until done says they are complete.
func (h *harness) waitResults(done func([]bridge.Result) bool) []bridge.Result {
	h.t.Helper()
	var out []bridge.Result
	readStream(h.t, h.nc, "wxbridge.results.>", func(int) bool { return done(out) }, func(m jetstream.Msg) {
		var r bridge.Result
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			h.t.Fatalf("result payload: %v", err)
		}
		out = append(out, r)
	}, func() { out = out[:0] })
	return out
}

// outcomesFor waits until every event in ids has an outcome (not a
// delivery receipt) for its recipients, and returns them by event.
func (h *harness) outcomesFor(ids ...string) map[string]bridge.Result {
	h.t.Helper()
	out := map[string]bridge.Result{}
	h.waitResults(func(rs []bridge.Result) bool {
		for _, r := range rs {
			if r.Status != "delivered" && r.Status != "undelivered" {
				out[r.EventID] = r
			}
		}
		for _, id := range ids {
			if _, ok := out[id]; !ok {
				return false
			}
		}
		return true
	})
	return out
}

func resultsByUser(rs []bridge.Result, eventID string) map[string]bridge.Result {
	out := map[string]bridge.Result{}
	for _, r := range rs {
		if r.EventID == eventID && r.Status != "delivered" && r.Status != "undelivered" {
			out[r.UserID] = r
		}
	}
	return out
}

func sendsTo(sends []wechattest.Sent, openid string) int {
	n := 0
	for _, s := range sends {
		if s.ToUser == openid {
			n++
		}
	}
	return n
}

// The subscription flow through WeChat's pushes: the user accepts in the
// (emulated) popup, WeChat pushes the popup event to the bridge's callback,
// the ledger grants one credit; the app's backend reports the same accept
// and it is not counted twice; the credit pays for exactly one send; the
// delivery report becomes a delivered result; an unsubscribe ends it.
func TestSubscriptionLedgerThroughCallbacks(t *testing.T) {
	backends(t, func(t *testing.T, opt func(*serveConfig)) {
		h := flow(t, opt)
		emu := h.svc.emu
		h.bind("u1", "o1")

		client := emu.Subscribe(flowAppID, "o1", map[string]string{tplNotice: "accept"})
		h.subscription("o1", tplNotice, func(s storage.Subscription) bool { return s.Credits == 1 })
		// The mini program's backend forwards what requestSubscribeMessage
		// returned: the same accept, heard on the second channel.
		delete(client, "errMsg")
		var subs bridge.SubscriptionsReply
		h.request("wxbridge.cmd.subscriptions", bridge.SubscriptionsRequest{App: "main", UserID: "u1", Results: client}, &subs)
		if subs.Error != "" || len(subs.Subscriptions) != 1 || subs.Subscriptions[0].Credits != 1 {
			t.Fatalf("client report of the same accept: %+v", subs)
		}

		h.publish("notice.posted", "n-1", map[string]any{"user_id": "u1", "text": "hello", "ref": "A1"})
		h.publish("notice.posted", "n-2", map[string]any{"user_id": "u1", "text": "again", "ref": "A2"})
		got := readResults(t, h.nc, 3) // two outcomes and one delivery receipt
		// Events are handled concurrently: either may take the one credit.
		first, second := resultsByUser(got, "n-1")["u1"], resultsByUser(got, "n-2")["u1"]
		if second.Status == "sent" {
			first, second = second, first
		}
		if first.Status != "sent" {
			t.Fatalf("neither event was sent: %+v, %+v", first, second)
		}
		if second.Status != "skipped" || second.Reason != "not_subscribed" {
			t.Fatalf("the other event, no credit left: %+v", second)
		}
		if n := len(emu.Sends()); n != 1 {
			t.Fatalf("WeChat got %d sends; the ledger should have stopped the second", n)
		}
		var delivered *bridge.Result
		for i, r := range got {
			if r.Status == "delivered" {
				delivered = &got[i]
			}
		}
		if delivered == nil || delivered.MsgID != first.MsgID || delivered.EventID != first.EventID || delivered.UserID != "u1" {
			t.Fatalf("delivery receipt: %+v (sent msgid %s)", delivered, first.MsgID)
		}

		// The user sets 拒收 in the service notifications: the change push
		// rejects the template, and even a new accept on the client side is
		// needed before anything is sent again.
		nextSecond() // a popup in the same second as the first would share its dedupe key
		emu.Subscribe(flowAppID, "o1", map[string]string{tplNotice: "accept"})
		h.subscription("o1", tplNotice, func(s storage.Subscription) bool { return s.Credits == 1 })
		emu.Unsubscribe(flowAppID, "o1", tplNotice)
		h.subscription("o1", tplNotice, func(s storage.Subscription) bool { return s.Status == storage.StatusReject && s.Credits == 0 })
		h.publish("notice.posted", "n-3", map[string]any{"user_id": "u1", "text": "x", "ref": "A3"})
		if r := resultsByUser(readResults(t, h.nc, 4), "n-3")["u1"]; r.Status != "skipped" || r.Reason != "rejected" {
			t.Fatalf("after unsubscribe: %+v", r)
		}

		// Every ledger change was announced.
		var changes []bridge.SubscriptionChange
		readStream(t, h.nc, "wxbridge.subscriptions.main", func(n int) bool { return n >= 4 }, func(m jetstream.Msg) {
			var c bridge.SubscriptionChange
			_ = json.Unmarshal(m.Data(), &c)
			changes = append(changes, c)
		}, func() { changes = changes[:0] })
		var trail []string
		for _, c := range changes {
			trail = append(trail, fmt.Sprintf("%s:%s:%d", c.Source, c.Status, c.Credits))
		}
		want := "popup:accept:1 send:accept:0 popup:accept:1 change:reject:0"
		if got := strings.Join(trail, " "); !strings.HasPrefix(got, want) {
			t.Fatalf("announced changes %q, want %q", got, want)
		}
	})
}

// A request that is not WeChat changes nothing: a forged signature is
// refused, and so is a replay of a real push with an old timestamp.
func TestForgedCallbackChangesNothing(t *testing.T) {
	h := flow(t)
	h.bind("u1", "o1")
	base := "http://" + h.svc.ln.Addr().String() + "/wechat/callback/main"
	body := `{"ToUserName":"gh_x","FromUserName":"o1","CreateTime":` + fmt.Sprint(time.Now().Unix()) +
		`,"MsgType":"event","Event":"subscribe_msg_popup_event","List":{"TemplateId":"` + tplNotice + `","SubscribeStatusString":"accept","PopupScene":"0"}}`
	q := url.Values{"timestamp": {fmt.Sprint(time.Now().Unix())}, "nonce": {"123"}, "signature": {"0000000000000000000000000000000000000000"}}
	resp, err := http.Post(base+"?"+q.Encode(), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged push answered %d", resp.StatusCode)
	}
	// The body, correctly encrypted and signed but 1 hour old: a replay.
	old := fmt.Sprint(time.Now().Add(-time.Hour).Unix())
	key, err := wechat.AESKey(flowAESKey)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := wechat.Encrypt(key, flowAppID, []byte(body), nil)
	if err != nil {
		t.Fatal(err)
	}
	q = url.Values{"timestamp": {old}, "nonce": {"123"}, "signature": {sha1Sorted(flowToken, old, "123")},
		"encrypt_type": {"aes"}, "msg_signature": {sha1Sorted(flowToken, old, "123", enc)}}
	resp, err = http.Post(base+"?"+q.Encode(), "application/json", strings.NewReader(`{"ToUserName":"gh_x","Encrypt":"`+enc+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("replayed push answered %d", resp.StatusCode)
	}
	if s, found, _ := h.svc.store.Subscription(context.Background(), "main", "o1", tplNotice); found {
		t.Fatalf("a refused push changed the ledger: %+v", s)
	}
}

// Binding through code2session; roles; a fan-out over many users in every
// state, each with the right outcome; a user named and in the role gets one
// message.
func TestBindByCodeAndRoleFanOut(t *testing.T) {
	h := flow(t)
	emu := h.svc.emu

	code := emu.IssueCode(flowAppID, "o-lead", "union-lead")
	var reply bridge.BindReply
	h.request("wxbridge.cmd.bind", bridge.BindRequest{App: "main", UserID: "lead", Code: code}, &reply)
	if reply.Error != "" || reply.OpenID != "o-lead" {
		t.Fatalf("bind by code: %+v", reply)
	}
	if b, _, _ := h.svc.store.Binding(context.Background(), "main", "lead"); b.UnionID != "union-lead" {
		t.Fatalf("unionid not stored: %+v", b)
	}
	h.request("wxbridge.cmd.bind", bridge.BindRequest{App: "main", UserID: "other", Code: code}, &reply)
	if !strings.Contains(reply.Error, "40029") {
		t.Fatalf("a used code: %+v", reply)
	}

	// 40 members: 10 unbound, 10 bound without a subscription, 10 who
	// rejected, 10 with a credit. The lead is also a member and named.
	const n = 40
	for i := 0; i < n; i++ {
		user := fmt.Sprintf("m%02d", i)
		var ok bridge.OKReply
		h.request("wxbridge.cmd.roles", bridge.RolesRequest{UserID: user, Grant: []storage.Role{{Role: "member", Scope: "team:7"}}}, &ok)
		if !ok.OK {
			t.Fatalf("grant: %+v", ok)
		}
		openid := "o-" + user
		switch i / 10 {
		case 0: // unbound
		case 1:
			h.bind(user, openid)
		case 2:
			h.bind(user, openid)
			emu.Subscribe(flowAppID, openid, map[string]string{tplNotice: "reject"})
			h.subscription(openid, tplNotice, func(s storage.Subscription) bool { return s.Status == storage.StatusReject })
		case 3:
			h.bind(user, openid)
			emu.Subscribe(flowAppID, openid, map[string]string{tplNotice: "accept"})
			h.subscription(openid, tplNotice, func(s storage.Subscription) bool { return s.Credits == 1 })
		}
	}
	var ok bridge.OKReply
	h.request("wxbridge.cmd.roles", bridge.RolesRequest{UserID: "lead", Grant: []storage.Role{{Role: "member", Scope: "team:7"}}}, &ok)
	emu.Subscribe(flowAppID, "o-lead", map[string]string{tplNotice: "accept"})
	h.subscription("o-lead", tplNotice, func(s storage.Subscription) bool { return s.Credits == 1 })
	// A revoked member hears nothing: roles are resolved at send time.
	h.request("wxbridge.cmd.roles", bridge.RolesRequest{UserID: "m39", Revoke: []storage.Role{{Role: "member", Scope: "team:7"}}}, &ok)

	h.publish("team.notice", "t-1", map[string]any{"team": 7, "lead": "lead", "text": "standup moved", "ref": "T7"})
	// 39 members + the lead. Counted as outcomes: the delivery receipts of
	// the first sends may be published before the last outcomes.
	var got map[string]bridge.Result
	h.waitResults(func(rs []bridge.Result) bool {
		got = resultsByUser(rs, "t-1")
		return len(got) >= n
	})
	if len(got) != n {
		t.Fatalf("%d recipients have results, want %d (39 members + the lead once): %+v", len(got), n, got)
	}
	for user, r := range got {
		var want string
		switch {
		case user == "lead":
			want = "sent/"
		case user < "m10":
			want = "skipped/not_bound"
		case user < "m20":
			want = "skipped/not_subscribed"
		case user < "m30":
			want = "skipped/rejected"
		default:
			want = "sent/"
		}
		if r.Status+"/"+r.Reason != want {
			t.Errorf("%s: %s/%s, want %s", user, r.Status, r.Reason, want)
		}
	}
	if _, ok := got["m39"]; ok {
		t.Error("a revoked member got a result")
	}
	sends := emu.Sends()
	if len(sends) != 10 || sendsTo(sends, "o-lead") != 1 {
		t.Fatalf("WeChat got %d sends (%d to the lead), want 10 (9 subscribed members + the lead once)", len(sends), sendsTo(sends, "o-lead"))
	}
}

// The admin API refuses requests without the token, and never returns a
// secret even to its owner.
func TestAdminAPI(t *testing.T) {
	const token = "admin-token-for-test"
	h := flow(t, func(c *serveConfig) { c.AdminToken = token })
	h.bind("u1", "o1")
	h.svc.emu.Subscribe(flowAppID, "o1", map[string]string{tplNotice: "accept"})
	h.subscription("o1", tplNotice, func(s storage.Subscription) bool { return s.Credits == 1 })
	var ok bridge.OKReply
	h.request("wxbridge.cmd.roles", bridge.RolesRequest{UserID: "u1", Grant: []storage.Role{{Role: "member", Scope: "team:1"}}}, &ok)
	h.publish("notice.posted", "a-1", map[string]any{"user_id": "u1", "text": "hi", "ref": "R"})
	h.eventDone("a-1")

	base := "http://" + h.svc.ln.Addr().String()
	get := func(path, tok string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tok := range []string{"", "wrong"} {
		if code, _ := get("/v1/users/u1", tok); code != http.StatusUnauthorized {
			t.Fatalf("token %q: %d, want 401", tok, code)
		}
	}
	code, body := get("/v1/users/u1", token)
	if code != http.StatusOK || !strings.Contains(body, `"openid": "o1"`) || !strings.Contains(body, `"credits": 0`) ||
		!strings.Contains(body, `"template": "notice"`) || !strings.Contains(body, `"role": "member"`) {
		t.Fatalf("user state %d: %s", code, body)
	}
	code, body = get("/v1/events/a-1", token)
	if code != http.StatusOK || !strings.Contains(body, `"status": "sent"`) || !strings.Contains(body, `"done": true`) {
		t.Fatalf("event state %d: %s", code, body)
	}
	code, body = get("/v1/roles/member?scope=team:1", token)
	if code != http.StatusOK || !strings.Contains(body, `"user_id": "u1"`) {
		t.Fatalf("role state %d: %s", code, body)
	}
	if code, _ := get("/v1/events/nope", token); code != http.StatusNotFound {
		t.Fatalf("unknown event: %d", code)
	}
	tok, _, _ := h.svc.store.LoadToken(context.Background(), flowAppID+"/stable")
	for _, path := range []string{"/v1/users/u1", "/v1/events/a-1", "/v1/roles/member?scope=team:1", "/metrics"} {
		_, body := get(path, token)
		for _, secret := range []string{flowSecret, flowAESKey, flowToken, tok} {
			if secret != "" && strings.Contains(body, secret) {
				t.Fatalf("%s leaks a secret", path)
			}
		}
	}
	if tok == "" {
		t.Fatal("no access token was stored, so the leak check above proved nothing")
	}
}

// A republished event (same identity) sends nothing new; its results say
// duplicate.
func TestRepublishedEventIsDuplicate(t *testing.T) {
	backends(t, func(t *testing.T, opt func(*serveConfig)) {
		h := flow(t, opt)
		h.bind("u1", "o1")
		h.grant("u1", "o1", tplNotice, 2)
		// A CloudEvent is known by its source and id. Published again after
		// the stream's dedupe window would have let it through (or with no
		// Nats-Msg-Id at all, on another subject), it is the same event.
		js, _ := jetstream.New(h.nc)
		ce := `{"specversion":"1.0","id":"dup-1","type":"notice.posted","source":"test","data":{"user_id":"u1","text":"once","ref":"D"}}`
		if _, err := js.Publish(context.Background(), "events.notice.posted", []byte(ce)); err != nil {
			t.Fatal(err)
		}
		if r := h.outcomesFor("dup-1")["dup-1"]; r.Status != "sent" || r.EventSource != "test" {
			t.Fatalf("first: %+v", r)
		}
		if _, err := js.Publish(context.Background(), "events.anything", []byte(ce)); err != nil {
			t.Fatal(err)
		}
		var dup bridge.Result
		h.waitResults(func(rs []bridge.Result) bool {
			for _, r := range rs {
				if r.Reason == "duplicate" {
					dup = r
					return true
				}
			}
			return false
		})
		if dup.Status != "skipped" || dup.EventID != "dup-1" || dup.UserID != "u1" {
			t.Fatalf("republished: %+v", dup)
		}
		if n := len(h.svc.emu.Sends()); n != 1 {
			t.Fatalf("WeChat got %d sends for one event id", n)
		}
		if s, _, _ := h.svc.store.Subscription(context.Background(), "main", "o1", tplNotice); s.Credits != 1 {
			t.Fatalf("the duplicate spent a credit: %+v", s)
		}
	})
}

// Input that can never be processed goes to wxbridge.dead with its reason,
// and the good events around it keep flowing.
func TestDeadLettersAndTheFlowGoesOn(t *testing.T) {
	h := flow(t)
	h.bind("u1", "o1")
	h.grant("u1", "o1", tplNotice, 2)
	js, _ := jetstream.New(h.nc)
	pub := func(subject string, body []byte) {
		t.Helper()
		if _, err := js.Publish(context.Background(), subject, body); err != nil {
			t.Fatal(err)
		}
	}
	h.publish("notice.posted", "good-1", map[string]any{"user_id": "u1", "text": "a", "ref": "1"})
	pub("events.notice.posted", []byte("this is not json"))
	pub("events.notice.posted", []byte(`{"specversion":"1.0","id":"x"}`)) // a CloudEvent with no type
	pub("events.notice.posted", []byte(`{"user_id":"u1","pad":"`+strings.Repeat("x", 2<<20)+`"}`))
	h.publish("notice.posted", "good-2", map[string]any{"user_id": "u1", "text": "b", "ref": "2"})

	type dead struct{ reason, body string }
	var deads []dead
	readStream(t, h.nc, "wxbridge.dead", func(n int) bool { return n >= 3 }, func(m jetstream.Msg) {
		deads = append(deads, dead{m.Headers().Get("Wxbridge-Error"), string(m.Data())})
	}, func() { deads = deads[:0] })
	if len(deads) != 3 {
		t.Fatalf("dead letters: %+v", deads)
	}
	// Events are handled concurrently: match dead letters by reason, not
	// by order.
	bodies := map[string]string{}
	for _, d := range deads {
		for _, want := range []string{"not JSON", "no type", "over the"} {
			if strings.Contains(d.reason, want) {
				bodies[want] = d.body
			}
		}
	}
	if len(bodies) != 3 {
		t.Errorf("dead letter reasons %+v, want one not JSON, one without a type, one too big", deads)
	}
	if bodies["not JSON"] != "this is not json" {
		t.Errorf("the dead letter lost the original body: %q", bodies["not JSON"])
	}
	got := h.outcomesFor("good-1", "good-2")
	if got["good-1"].Status != "sent" || got["good-2"].Status != "sent" {
		t.Fatalf("good events around the bad ones: %+v", got)
	}
}

// With WeChat failing transiently (-1, HTTP 500, dropped connections,
// tokens invalidated), every recipient is still sent exactly once. A
// dropped connection leaves the bridge unable to know whether WeChat acted,
// so those results say in_doubt; the emulator's record shows no duplicate.
func TestWeChatFaultsEndExactlyOnce(t *testing.T) {
	backends(t, func(t *testing.T, opt func(*serveConfig)) {
		h := flow(t, opt, func(c *serveConfig) {
			c.Bridge.MaxAttempts = 30
			c.Bridge.RetryBase, c.Bridge.RetryMax = 20*time.Millisecond, 100*time.Millisecond
			// No short WeChatTimeout: none of these faults hangs, and on a
			// loaded machine a short one times out sends WeChat accepted, whose
			// retries then meet 43101 (one credit each) and fail.
		})
		emu := h.svc.emu
		const users = 30
		var ids []string
		for i := 0; i < users; i++ {
			h.bind(fmt.Sprintf("u%02d", i), fmt.Sprintf("o%02d", i))
			h.grant(fmt.Sprintf("u%02d", i), fmt.Sprintf("o%02d", i), tplNotice, 1)
			ids = append(ids, fmt.Sprintf("f-%02d", i))
		}
		emu.SetFaults(wechattest.Faults{SystemErrorRate: 0.15, HTTP500Rate: 0.1, DropRate: 0.05,
			InvalidateTokenEvery: 7, Paths: []string{wechattest.PathSend}, Seed: 42})
		for i := 0; i < users; i++ {
			h.publish("notice.posted", ids[i], map[string]any{"user_id": fmt.Sprintf("u%02d", i), "text": "t", "ref": "F"})
		}
		got := h.outcomesFor(ids...)
		retried := 0
		for i, id := range ids {
			r := got[id]
			if r.Status != "sent" || (r.InDoubt && r.Attempts == 1) {
				t.Errorf("event %s: %+v", id, r)
			}
			if r.Attempts > 1 {
				retried++
			}
			if n := sendsTo(emu.Sends(), fmt.Sprintf("o%02d", i)); n != 1 {
				t.Errorf("o%02d got %d messages, want exactly 1", i, n)
			}
		}
		if retried == 0 {
			t.Fatalf("no recipient needed a retry: the faults proved nothing (%v)", emu.Calls())
		}
	})
}

// When WeChat carries a send out but the reply is lost, the bridge cannot
// know; it sends again (at_least_once) and says in_doubt. Here the retry
// meets 43101 because the lost attempt spent the only credit, so the user
// got exactly one message and the result admits the doubt.
func TestLostReplyIsInDoubt(t *testing.T) {
	backends(t, func(t *testing.T, opt func(*serveConfig)) {
		h := flow(t, opt, func(c *serveConfig) {
			c.Bridge.RetryBase, c.Bridge.RetryMax = 20*time.Millisecond, 50*time.Millisecond
		})
		h.bind("u1", "o1")
		h.grant("u1", "o1", tplNotice, 1)
		h.svc.emu.SetFaults(wechattest.Faults{LostReplyRate: 1, Paths: []string{wechattest.PathSend}})
		h.publish("notice.posted", "lost-1", map[string]any{"user_id": "u1", "text": "t", "ref": "L"})
		deadline := time.Now().Add(waitLimit)
		for len(h.svc.emu.Sends()) == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		h.svc.emu.SetFaults(wechattest.Faults{})
		r := h.outcomesFor("lost-1")["lost-1"]
		if !r.InDoubt || r.Attempts < 2 {
			t.Fatalf("a send whose reply was lost: %+v", r)
		}
		if n := len(h.svc.emu.Sends()); n != 1 {
			t.Fatalf("the user got %d messages", n)
		}
	})
}

// Quiet hours defer a send to the end of the window; the deferred work is
// in the database, so a restart in the night does not lose it.
func TestQuietHoursDeferSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	clock := storagetest.NewClockAt(time.Date(2026, 11, 21, 23, 30, 0, 0, shanghai))
	opt := func(c *serveConfig) {
		c.Bridge.Now = clock.Now
		c.Bridge.SchedulePoll = 20 * time.Millisecond
	}
	h := startHarness(t, dir, flowRules, opt)
	h.bind("u1", "o1")
	h.svc.emu.Subscribe(flowAppID, "o1", map[string]string{tplAlert: "accept"})
	h.subscription("o1", tplAlert, func(s storage.Subscription) bool { return s.Credits == 1 })
	h.publish("night.alert", "q-1", map[string]any{"user_id": "u1", "text": "disk almost full"})
	h.eventDone("q-1") // handled (and acked) with the send deferred
	if n := len(h.svc.emu.Sends()); n != 0 {
		t.Fatalf("sent during quiet hours: %d", n)
	}
	h.stop()

	h = startHarness(t, dir, flowRules, opt, func(c *serveConfig) {
		c.emulatorSetup = func(emu *wechattest.Emulator) { emu.Accept(flowAppID, "o1", tplAlert) }
	})
	time.Sleep(100 * time.Millisecond)
	if n := len(h.svc.emu.Sends()); n != 0 {
		t.Fatalf("sent during quiet hours after restart: %d", n)
	}
	clock.Set(time.Date(2026, 11, 22, 8, 0, 1, 0, shanghai))
	r := h.outcomesFor("q-1")["q-1"]
	if r.Status != "sent" {
		t.Fatalf("after the window: %+v", r)
	}
	if n := len(h.svc.emu.Sends()); n != 1 {
		t.Fatalf("WeChat got %d sends", n)
	}
}

// SIGTERM (here: the context ending) lets in-flight sends finish and
// records their outcomes; nothing is lost or sent twice across the
// restart.
func TestShutdownFinishesInFlightSends(t *testing.T) {
	dir := t.TempDir()
	h := startHarness(t, dir, flowRules)
	const n = 20
	for i := 0; i < n; i++ {
		h.bind(fmt.Sprintf("u%02d", i), fmt.Sprintf("o%02d", i))
		h.grant(fmt.Sprintf("u%02d", i), fmt.Sprintf("o%02d", i), tplNotice, 1)
	}
	h.svc.emu.SetFaults(wechattest.Faults{Latency: 300 * time.Millisecond})
	for i := 0; i < n; i++ {
		h.publish("notice.posted", fmt.Sprintf("s-%02d", i), map[string]any{"user_id": fmt.Sprintf("u%02d", i), "text": "t", "ref": "S"})
	}
	// Stop while sends are under way.
	deadline := time.Now().Add(waitLimit)
	for h.svc.emu.Calls()["/cgi-bin/message/subscribe/send"] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no send reached WeChat within %s", waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	sentBefore := h.svc.emu
	h.stop()
	before := sentBefore.Sends()

	h = startHarness(t, dir, flowRules, func(c *serveConfig) {
		c.emulatorSetup = func(emu *wechattest.Emulator) { // the new emulator's WeChat state
			for i := 0; i < n; i++ {
				emu.Accept(flowAppID, fmt.Sprintf("o%02d", i), tplNotice)
			}
		}
	})
	var ids []string
	for i := 0; i < n; i++ {
		ids = append(ids, fmt.Sprintf("s-%02d", i))
	}
	got := h.outcomesFor(ids...)
	after := h.svc.emu.Sends()
	perUser := map[string]int{}
	for _, s := range append(before, after...) {
		perUser[s.ToUser]++
	}
	for i := 0; i < n; i++ {
		openid := fmt.Sprintf("o%02d", i)
		if perUser[openid] != 1 {
			t.Errorf("%s got %d messages across the restart, want 1", openid, perUser[openid])
		}
		r := got[fmt.Sprintf("s-%02d", i)]
		if r.Status != "sent" || r.InDoubt {
			t.Errorf("s-%02d: %+v", i, r)
		}
	}
	if len(before) == 0 {
		t.Fatal("nothing was in flight at shutdown: the test proved nothing")
	}
}

// Many events for one user at once: sends to one openid never overlap, so
// WeChat never answers 43108.
func TestSendsToOneUserAreSerialised(t *testing.T) {
	h := flow(t)
	h.bind("u1", "o1")
	const n = 20
	h.grant("u1", "o1", tplNotice, n)
	h.svc.emu.SetFaults(wechattest.Faults{Latency: 10 * time.Millisecond})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.publish("notice.posted", fmt.Sprintf("c-%02d", i), map[string]any{"user_id": "u1", "text": "t", "ref": "C"})
		}()
	}
	wg.Wait()
	var ids []string
	for i := 0; i < n; i++ {
		ids = append(ids, fmt.Sprintf("c-%02d", i))
	}
	var bad []string
	for _, r := range h.outcomesFor(ids...) {
		if r.Status != "sent" {
			bad = append(bad, fmt.Sprintf("%s:%s/%s/%d", r.EventID, r.Status, r.Reason, r.ErrCode))
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Fatalf("not sent: %v", bad)
	}
}

// nextSecond sleeps into the next wall-clock second: WeChat's pushes carry
// CreateTime in seconds and are deduplicated on it.
func nextSecond() {
	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(time.Second + 10*time.Millisecond).Sub(now))
}

// sha1Sorted is WeChat's signature, written independently of the code
// under test.
func sha1Sorted(parts ...string) string {
	sort.Strings(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	return hex.EncodeToString(sum[:])
}

// serve reloads rules.yaml when it changes; a file that fails the checks is
// refused and the rules in force keep running.
func TestRulesReload(t *testing.T) {
	dir := t.TempDir()
	logs := &syncBuffer{}
	h := startHarness(t, dir, flowRules, func(c *serveConfig) {
		c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, logs), &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	h.bind("u1", "o1")
	h.grant("u1", "o1", tplNotice, 2)
	path := filepath.Join(dir, "rules.yaml")
	waitRule := func(name string, present bool) {
		t.Helper()
		deadline := time.Now().Add(waitLimit)
		for {
			found := false
			for _, r := range h.svc.bridge.Rules().Rules {
				found = found || r.Name == name
			}
			if found == present {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("rule %s present=%v never happened", name, present)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	renamed := strings.Replace(flowRules, "notice-to-user", "notice-to-user-v2", 1)
	if err := os.WriteFile(path, []byte(renamed), 0o600); err != nil {
		t.Fatal(err)
	}
	waitRule("notice-to-user-v2", true)
	h.publish("notice.posted", "r-1", map[string]any{"user_id": "u1", "text": "x", "ref": "R1"})
	if r := h.outcomesFor("r-1")["r-1"]; r.Rule != "notice-to-user-v2" || r.Status != "sent" {
		t.Fatalf("after reload: %+v", r)
	}

	// A broken file: an unknown template. Refused; v2 keeps running.
	broken := strings.Replace(renamed, "template: notice\n    to:\n      - user", "template: nosuch\n    to:\n      - user", 1)
	if broken == renamed {
		t.Fatal("the test did not break the file")
	}
	if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitLimit)
	for !strings.Contains(logs.String(), "rules reload refused") {
		if time.Now().After(deadline) {
			t.Fatalf("the broken file was never refused:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitRule("notice-to-user-v2", true)
	h.publish("notice.posted", "r-2", map[string]any{"user_id": "u1", "text": "y", "ref": "R2"})
	if r := h.outcomesFor("r-2")["r-2"]; r.Rule != "notice-to-user-v2" || r.Status != "sent" {
		t.Fatalf("after a refused reload: %+v", r)
	}

	// An empty file, as an editor leaves it for an instant while it
	// saves (truncate, then write): refused, not taken for no rules.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(waitLimit)
	for !strings.Contains(logs.String(), "is empty (being written?)") {
		if time.Now().After(deadline) {
			t.Fatalf("the empty file was never refused:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitRule("notice-to-user-v2", true)
	if len(h.svc.bridge.Rules().Apps) == 0 {
		t.Fatal("an empty file took the apps away")
	}
}
